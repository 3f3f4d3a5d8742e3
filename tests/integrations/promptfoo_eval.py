"""Runs of the real promptfoo (0.118, installed by ``scripts/promptfoo-install``) over
``examples/promptfoo``, for the promptfoo integration's tests."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "promptfoo"
INSTALL = ROOT / "scripts" / "promptfoo-install"
CREATED = re.compile(r"sessionhub: suite session (\S+) created")
TIMEOUT = 600  # one eval: ~15 s on an idle 2-core machine, minutes on a crowded one


def install_promptfoo() -> Path:
    """The ``promptfoo`` command, installed on first use (npm, ~4 min: it compiles better-sqlite3)
    and reused after; the test FAILS when node or npm is missing."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: the promptfoo tests need Node 20 and npm")
    done = subprocess.run([str(INSTALL)], capture_output=True, text=True, timeout=1200, check=False)
    if done.returncode != 0:
        pytest.fail(f"scripts/promptfoo-install failed:\n{done.stderr[-3000:]}")
    return Path(done.stdout.strip().splitlines()[-1])


@dataclass
class EvalRun:
    """A finished ``promptfoo eval``: its exit code, its whole output and its summary."""

    returncode: int
    output: str
    summary: dict[str, Any]

    @property
    def suite_ids(self) -> list[str]:
        """The suite sessions the beforeAll hook reported creating."""
        return CREATED.findall(self.output)


class Evaluation:
    """One ``promptfoo eval`` of the example, started now, in a folder of its own."""

    def __init__(self, promptfoo: Path, workdir: Path, env: dict[str, str], *args: str) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self._run: EvalRun | None = None
        self._out = workdir / "out.json"
        self._log = (workdir / "eval.log").open("w+")
        command = [str(promptfoo), "eval", "-c", str(EXAMPLE / "promptfooconfig.yaml")]
        command += ["--no-write", "--no-cache", "--no-table", "-o", str(self._out), *args]
        self._process = subprocess.Popen(
            command,
            cwd=workdir,
            env=eval_env(workdir, env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait(self) -> EvalRun:
        if self._run is None:
            self._run = self._finish()
        return self._run

    def stop(self) -> None:
        """Kill it if it still runs (a test that failed early left it)."""
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait()

    def _finish(self) -> EvalRun:
        try:
            returncode = self._process.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
            raise
        finally:
            self._log.seek(0)
            output = self._log.read()
            self._log.close()
        summary = json.loads(self._out.read_text()) if self._out.exists() else {}
        return EvalRun(returncode, output, summary)


def eval_env(workdir: Path, extra: dict[str, str]) -> dict[str, str]:
    """promptfoo offline and out of the user's home; Python hooks and providers in this venv;
    sessions in ``workdir``'s cache folder unless ``extra`` names SESSIONHUB_URL."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("SESSIONHUB_", "PROMPTFOO_"))
    }
    env.update(
        PROMPTFOO_PYTHON=sys.executable,
        PROMPTFOO_DISABLE_TELEMETRY="1",
        PROMPTFOO_DISABLE_UPDATE="1",
        PROMPTFOO_CONFIG_DIR=str(workdir / "promptfoo-config"),
        XDG_CACHE_HOME=str(workdir / "cache"),
        NO_COLOR="1",
        FORCE_COLOR="0",
    )
    env.update(extra)
    return env


def run_eval(promptfoo: Path, workdir: Path, env: dict[str, str], *args: str) -> EvalRun:
    return Evaluation(promptfoo, workdir, env, *args).wait()
