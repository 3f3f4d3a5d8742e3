"""Worker processes started together, for the tests where several hub processes share a store."""

from __future__ import annotations

import subprocess
from pathlib import Path

__all__ = ["run_together"]


def run_together(commands: list[list[str]], logs: Path, patience: float) -> None:
    """Start one process per command, wait until each says ``ready`` (it has subscribed), tell
    them all ``go`` and wait for them; each one's stderr goes to ``logs/worker<i>.log``. Fails,
    with the logs' tails, unless every one exits 0 within ``patience`` (then it is killed)."""
    files = [(logs / f"worker{i}.log").open("w") for i in range(len(commands))]
    workers = [
        subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True
        )
        for command, log in zip(commands, files, strict=True)
    ]
    try:
        for worker in workers:
            assert worker.stdout is not None
            assert worker.stdout.readline().strip() == "ready"
        for worker in workers:  # all subscribe before any session exists
            assert worker.stdin is not None
            worker.stdin.write("go\n")
            worker.stdin.flush()
        codes = [worker.wait(patience) for worker in workers]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
        for log in files:
            log.close()
    tails = [path.read_text()[-3000:] for path in sorted(logs.glob("worker*.log"))]
    assert codes == [0] * len(workers), tails
