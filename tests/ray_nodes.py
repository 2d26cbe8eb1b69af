"""Real Ray nodes on one machine, started as a user starts them, for the multi-node tests and the Ray benchmark.

:class:`Cluster` runs ``ray start --head`` and ``ray start --address=HEAD:PORT`` as separate commands, each node with
its own ports, its own temporary folder and its own CPU count (and, with ``pin``, its own cores: each node's
processes start under ``taskset``, as on a machine of that many cores). Token authentication is on, as docs/ray.md
tells a user to set it up: one generated token, ``RAY_AUTH_MODE=token`` and ``RAY_AUTH_TOKEN`` for every node and
for the driver (:meth:`Cluster.env`). Every node listens on the loopback address only.

A node is found by its temporary folder (its raylet and agents name it) and the processes below them (its workers),
so :meth:`Node.kill` ends a whole node, raylet, agents and workers, the way a machine that loses power does; and
:meth:`Cluster.stop` ends only this cluster's processes, never another Ray on the machine (``ray stop`` would).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

LOOPBACK = "127.0.0.1"
RAY = str(Path(sys.executable).with_name("ray"))  # the `ray` command of this environment
TASK_TITLE = (b"ray::analyse_inputs", b"ray::write_part")  # a Ray worker's title while it runs a task of the job
# A killed node is declared dead after a few missed health checks (Ray's defaults wait about half a minute).
FAST_HEALTH_CHECKS = {"RAY_health_check_initial_delay_ms": "1000", "RAY_health_check_period_ms": "500",
                      "RAY_health_check_timeout_ms": "500", "RAY_health_check_failure_threshold": "3"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def _processes() -> dict[int, tuple[int, bytes]]:
    """Every live process (not the exited ones not yet reaped): its parent and its command line (its title, for
    a Ray worker)."""
    found: dict[int, tuple[int, bytes]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        state, parent = stat.rsplit(")", 1)[1].split()[:2]
        if state != "Z":
            found[int(entry.name)] = (int(parent), cmdline)
    return found


@dataclass
class Node:
    """One Ray node of a :class:`Cluster`: its temporary folder (what finds its processes), CPUs and cores."""

    temp_dir: Path
    cpus: int
    cores: tuple[int, ...] | None = None
    gcs_port: int | None = None  # the head's: its Ray client server names the port, not the folder

    def _is_mine(self, cmd: bytes) -> bool:
        if str(self.temp_dir).encode() in cmd:
            return True
        return self.gcs_port is not None and b"ray.util.client.server" in cmd and f":{self.gcs_port}\0".encode() in cmd

    def pids(self) -> list[int]:
        """The node's processes: those that name its temporary folder (raylet, agents) or, on the head, its GCS
        port (the Ray client server), and all below them."""
        table = _processes()
        mine = {pid for pid, (_, cmd) in table.items() if self._is_mine(cmd)}
        grew = True
        while grew:
            below = {pid for pid, (parent, _) in table.items() if parent in mine and pid not in mine}
            mine |= below
            grew = bool(below)
        return sorted(mine)

    def running_tasks(self) -> list[int]:
        """The node's workers that are running a task of the job's stage now."""
        table = _processes()
        return [pid for pid in self.pids() if pid in table and table[pid][1].startswith(TASK_TITLE)]

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal every process of the node (SIGKILL: the node dies at once, as a machine that loses power)."""
        for pid in self.pids():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass


@dataclass
class Cluster:
    """A head node and worker nodes of ``cpus[i]`` CPUs each, started with ``ray start``; a context manager."""

    cpus: Sequence[int] = (1, 1)
    pin: bool = False  # each node on its own cores (node i on the cores after node i-1's)
    extra_env: dict[str, str] = field(default_factory=dict)
    token: str = field(default_factory=lambda: secrets.token_hex(32))
    nodes: list[Node] = field(default_factory=list)
    port: int = 0
    root: Path | None = None

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def env(self, **more: str) -> dict[str, str]:
        """The environment of a process of this cluster (a node, or a driver that joins it): the token."""
        return {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token, **self.extra_env, **more}

    def start(self) -> Self:
        self.root = Path(tempfile.mkdtemp(prefix="fer-ray-", dir="/tmp"))  # short: Ray's socket paths must be
        self.port = free_port()
        first_core = 0
        for i, cpus in enumerate(self.cpus):
            cores = tuple(range(first_core, first_core + cpus)) if self.pin else None
            first_core += cpus
            node = Node(self.root / f"node{i}", cpus, cores, gcs_port=self.port if i == 0 else None)
            command = [RAY, "start", f"--num-cpus={cpus}", f"--temp-dir={node.temp_dir}",
                       f"--node-ip-address={LOOPBACK}", f"--node-manager-port={free_port()}",
                       f"--object-manager-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
                       f"--dashboard-agent-grpc-port={free_port()}", f"--runtime-env-agent-port={free_port()}",
                       f"--metrics-export-port={free_port()}", "--disable-usage-stats"]
            if i == 0:
                command += ["--head", f"--port={self.port}", "--include-dashboard=false",
                            f"--ray-client-server-port={free_port()}"]
            else:
                command += [f"--address={self.address}"]
            if cores is not None:
                command = ["taskset", "-c", ",".join(map(str, cores)), *command]
            self.nodes.append(node)
            proc = subprocess.run(command, env=self.env(**FAST_HEALTH_CHECKS), capture_output=True, text=True,
                                  timeout=120, check=False)
            if proc.returncode != 0:
                self.stop()
                raise RuntimeError(f"ray start failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        self.wait_for_cpus(sum(self.cpus))
        return self

    def alive_cpus(self) -> float:
        """The CPUs of the cluster's live nodes, as a driver with the token sees them (a short Ray process)."""
        code = (f"import ray; ray.init(address={self.address!r}, log_to_driver=False, logging_level='ERROR'); "
                "print(sum(n['Resources'].get('CPU', 0) for n in ray.nodes() if n['Alive']))")
        proc = subprocess.run([sys.executable, "-c", code], env=self.env(), capture_output=True, text=True,
                              timeout=60, check=False)
        return float(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 and proc.stdout.strip() else 0.0

    def wait_for_cpus(self, cpus: float, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.alive_cpus() != cpus:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the cluster at {self.address} did not reach {cpus} CPUs")
            time.sleep(0.5)

    def stop(self) -> None:
        """End this cluster's processes (worker nodes first), then remove its folders."""
        for node in reversed(self.nodes):
            node.kill(signal.SIGTERM)
        deadline = time.monotonic() + 3
        while any(node.pids() for node in self.nodes) and time.monotonic() < deadline:
            time.sleep(0.2)
        for node in self.nodes:
            node.kill(signal.SIGKILL)
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
