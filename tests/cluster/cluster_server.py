"""A private Redis Cluster (3 primaries, 3 replicas) of ``redis-server`` on free loopback ports.

Built in a temporary directory with ``redis-cli --cluster create ... --cluster-replicas 1``; ready
when every node reports ``cluster_state:ok``; removed by ``stop()``. When ``redis-server`` or
``redis-cli`` cannot be found or the cluster does not form, construction raises: the tests that need
it fail, never skip.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from ..redis_server import exit_report, start_server

__all__ = ["RedisClusterServer"]


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def cluster_port(taken: set[int]) -> int:
    """A free port whose cluster bus port (10,000 higher) is free too; Redis refuses ports above
    55,535 in a cluster."""
    while True:
        port = random.randrange(20_000, 45_000)
        fresh = port not in taken and port + 10_000 not in taken
        if fresh and _bindable(port) and _bindable(port + 10_000):
            taken.add(port)
            return port


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} is not installed: the Redis Cluster tests cannot run")
    return path


class RedisClusterServer:
    """Started on construction; ``url`` (``redis+cluster://``) is ready when it returns."""

    def __init__(self, *, primaries: int = 3, replicas: int = 1) -> None:
        self._server = _binary("redis-server")
        self._cli = _binary("redis-cli")
        self._dir = tempfile.TemporaryDirectory(prefix="sessionhub-cluster-")
        self.ports: list[int] = []
        self._processes: dict[int, subprocess.Popen[bytes]] = {}
        try:
            taken: set[int] = set()
            for _ in range(primaries * (1 + replicas)):
                self.ports.append(self._start_on_free_port(taken))
            self._create(replicas)
            self.wait_ok()
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in self.ports[:3])

    def _start_on_free_port(self, taken: set[int]) -> int:
        """Another process can take a port between our check and the server's bind: try again."""
        for _ in range(5):
            port = cluster_port(taken)
            try:
                self._start(port)
            except RuntimeError as exc:
                if "Address already in use" not in str(exc):
                    raise
                continue
            return port
        raise RuntimeError("no free port pair for a cluster node after 5 tries")

    def _start(self, port: int) -> None:
        node_dir = Path(self._dir.name) / str(port)
        node_dir.mkdir(exist_ok=True)
        command = [
            self._server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(node_dir), "--logfile", "redis.log",
            "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", "1000", "--cluster-replica-validity-factor", "0",
        ]  # fmt: skip
        self._processes[port] = start_server(command)
        self._wait_ping(port)

    def cli(self, port: int, *args: str) -> str:
        done = subprocess.run(
            [self._cli, "-p", str(port), *args], capture_output=True, text=True, timeout=30
        )
        return done.stdout

    def _wait_ping(self, port: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._processes[port].poll() is not None:
                log = Path(self._dir.name) / str(port) / "redis.log"
                raise RuntimeError(f"port {port}: {exit_report(self._processes[port], log)}")
            if self.cli(port, "PING").strip() == "PONG":
                return
            time.sleep(0.05)
        raise RuntimeError(f"redis-server on {port} did not start in time")

    def _create(self, replicas: int) -> None:
        if len(self.ports) == 1:  # redis-cli wants 3 primaries: one node takes every slot itself
            self.cli(self.ports[0], "CLUSTER", "ADDSLOTSRANGE", "0", "16383")
            return
        nodes = [f"127.0.0.1:{port}" for port in self.ports]
        done = subprocess.run(
            [self._cli, "--cluster", "create", *nodes, "--cluster-replicas", str(replicas),
             "--cluster-yes"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {done.stdout}{done.stderr}")

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every running node says ``cluster_state:ok`` and every replica has finished its
        sync with its primary (before that a promoted replica would lack every write so far)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            running = [port for port, p in self._processes.items() if p.poll() is None]
            if all(self._ready(port) for port in running):
                return
            time.sleep(0.1)
        raise RuntimeError("the Redis Cluster did not reach cluster_state:ok in time")

    def _ready(self, port: int) -> bool:
        if "cluster_state:ok" not in self.cli(port, "CLUSTER", "INFO"):
            return False
        replication = self.cli(port, "INFO", "replication")
        return "role:slave" not in replication or "master_link_status:up" in replication

    def primaries(self) -> list[int]:
        """Ports of the nodes that are primaries now (as the first running node sees it)."""
        for port, process in self._processes.items():
            if process.poll() is None:
                lines = self.cli(port, "CLUSTER", "NODES").splitlines()
                return sorted(
                    int(line.split()[1].split("@")[0].rsplit(":", 1)[1])
                    for line in lines
                    if "master" in line.split()[2] and "fail" not in line.split()[2]
                )
        raise RuntimeError("no node of the cluster is running")

    def kill(self, port: int) -> None:
        """``kill -9`` one node."""
        process = self._processes[port]
        os.kill(process.pid, signal.SIGKILL)
        process.wait()

    def pause(self, port: int) -> None:
        """Stop one node without ending it (SIGSTOP): it receives nothing until ``resume``."""
        os.kill(self._processes[port].pid, signal.SIGSTOP)

    def resume(self, port: int) -> None:
        os.kill(self._processes[port].pid, signal.SIGCONT)

    def serving(self, key: str) -> tuple[int, int]:
        """The ports of the primary that serves ``key`` now and of its replica."""
        port = self.primaries()[0]
        slot = int(self.cli(port, "CLUSTER", "KEYSLOT", key))
        nodes = [line.split() for line in self.cli(port, "CLUSTER", "NODES").splitlines()]

        def covers(ranges: list[str]) -> bool:
            for part in ranges:
                low, _, high = part.partition("-")
                if not part.startswith("[") and int(low) <= slot <= int(high or low):
                    return True
            return False

        def port_of(node: list[str]) -> int:
            return int(node[1].split("@")[0].rsplit(":", 1)[1])

        primary = next(n for n in nodes if "master" in n[2] and covers(n[8:]))
        replica = next(n for n in nodes if n[3] == primary[0])
        return port_of(primary), port_of(replica)

    def stop(self) -> None:
        for process in self._processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
        self._dir.cleanup()
