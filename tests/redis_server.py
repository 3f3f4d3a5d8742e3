"""A private ``redis-server`` on a free loopback port, for the tests that need Redis.

Tests never touch the machine's own Redis: each run starts its own server (one per xdist worker),
keeps nothing on disk, and stops it afterwards. When ``redis-server`` cannot be started the tests
fail; they never skip, so a CI machine without Redis cannot pass by accident.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["RedisServer", "exit_report", "free_port", "start_server"]


def start_server(command: list[str]) -> subprocess.Popen[bytes]:
    """Start a ``redis-server`` that Linux stops (SIGTERM) when the test process that started it
    dies, so a worker killed mid-run, or one that never reached its teardown, leaves no server.

    util-linux's ``setpriv`` sets that parent-death signal and then execs the server. Not a
    ``preexec_fn``: Python code run in the child of a process with threads (gRPC's) can crash
    before exec, and Popen then takes the dead child for a started server."""
    setpriv = shutil.which("setpriv") if sys.platform.startswith("linux") else None
    prefix = [setpriv, "--pdeathsig", "TERM"] if setpriv else []
    return subprocess.Popen([*prefix, *command], stdout=subprocess.DEVNULL)


def exit_report(process: subprocess.Popen[bytes], log: Path) -> str:
    """Why a server that should be running is not: its exit status and its log's last lines."""
    tail = log.read_text()[-2000:] if log.exists() else "(no log written)"
    return f"redis-server exited with status {process.returncode}: {tail}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """Started on construction; ``url`` is ready when the constructor returns."""

    def __init__(
        self,
        *,
        port: int | None = None,
        password: str | None = None,
        wrapper: list[str] | None = None,
    ) -> None:
        """``wrapper`` runs the server under another program (a benchmark's ``valgrind``)."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed: the Redis tests cannot run")
        self.port = port or free_port()
        self.password = password
        self._dir = tempfile.TemporaryDirectory(prefix="sessionhub-redis-")
        self.log = Path(self._dir.name) / "redis.log"
        command = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        command += ["--appendonly", "no", "--dir", self._dir.name, "--logfile", str(self.log)]
        if password is not None:
            command += ["--requirepass", password]
        self._command = [*(wrapper or []), *command]
        self._process = start_server(self._command)
        self._wait_ready(60.0 if wrapper else 20.0)  # valgrind takes seconds to start

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def _wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(exit_report(self._process, self.log))
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    reply = sock.recv(64)
                    if reply.startswith((b"+PONG", b"-NOAUTH")):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("redis-server did not start in time")

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._dir.cleanup()

    def restart(self) -> None:
        """Stop and start again on the same port (the data is gone: nothing is kept on disk)."""
        if self._process.poll() is None:
            self._process.terminate()
            self._process.wait(10)
        self._process = start_server(self._command)
        self._wait_ready()
