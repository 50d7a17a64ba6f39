"""CARLA servers: launch (CarlaUE4.sh -RenderOffScreen), wait for the port, connect.

    servers = launch_servers("/opt/CARLA_0.9.16", num=2, port=2000)  # ports 2000, 2003
    ...
    for s in servers: s.stop()

Each server uses its RPC port P and the streaming ports P + 1 and P + 2, so
several servers on one machine are spaced PORT_STEP = 3 apart; each env's
traffic manager gets its own port (TM_PORT + i). `connect` fails within its
timeout with a CarlaUnreachableError that names the host, the port and how
to start a server.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

PORT_STEP = 3  # RPC port P, streaming P + 1, secondary P + 2
TM_PORT = 8000


class CarlaUnreachableError(ConnectionError):
    """No CARLA server answered at host:port within the timeout."""


class CarlaServerLost(RuntimeError):
    """A server stopped answering in the middle of an episode."""


def how_to_start(port: int) -> str:
    return (f"start one with `python scripts/carla_server.py --carla-root <CARLA folder> "
            f"--port {port}` (or `<CARLA folder>/CarlaUE4.sh -RenderOffScreen "
            f"-carla-rpc-port={port}`), or pass the host / port of a running server "
            "(--carla-host / --carla-port)")


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    """Whether a TCP connection to host:port succeeds within `timeout` s."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def connect(host: str, port: int, timeout: float = 10.0):
    """A carla.Client that has answered (get_server_version) within `timeout` s.

    A refused TCP connection fails at once; a port that accepts but does not answer
    as CARLA fails when the client's own timeout runs out."""
    import carla

    t0 = time.monotonic()
    if not port_open(host, port, timeout):
        raise CarlaUnreachableError(
            f"no CARLA server at {host}:{port} (connection refused or timed out after "
            f"{time.monotonic() - t0:.1f} s): {how_to_start(port)}")
    client = carla.Client(host, port)
    client.set_timeout(max(0.1, timeout - (time.monotonic() - t0)))
    try:
        server = client.get_server_version()
    except RuntimeError as e:
        raise CarlaUnreachableError(
            f"{host}:{port} accepted a connection but no CARLA server answered within "
            f"{timeout:.1f} s ({e}): {how_to_start(port)}") from None
    mine = client.get_client_version()
    if server.split("-")[0] != mine.split("-")[0]:
        import warnings

        warnings.warn(f"CARLA client {mine} talks to server {server} at {host}:{port}; "
                      "versions should match", stacklevel=2)
    client.set_timeout(timeout)
    return client


@dataclass
class CarlaServer:
    """One CarlaUE4.sh process (off-screen), its ports and its log."""

    carla_root: str
    port: int = 2000
    gpu: int | None = None  # -graphicsadapter=<gpu>
    extra_args: Sequence[str] = ("-quality-level=Low", "-nosound")
    log_dir: str = "runs/carla_logs"
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def script(self) -> Path:
        return Path(self.carla_root) / "CarlaUE4.sh"

    def command(self) -> list[str]:
        cmd = [str(self.script), "-RenderOffScreen", f"-carla-rpc-port={self.port}",
               f"-carla-streaming-port={self.port + 1}", f"-carla-secondary-port={self.port + 2}",
               *self.extra_args]
        if self.gpu is not None:
            cmd.append(f"-graphicsadapter={self.gpu}")
        return cmd

    def start(self, wait: bool = True, timeout: float = 180.0) -> CarlaServer:
        if not self.script.is_file():
            raise FileNotFoundError(f"{self.script} not found: --carla-root must be the folder "
                                    "of a CARLA 0.9.15 / 0.9.16 release (it holds CarlaUE4.sh)")
        Path(self.log_dir).mkdir(parents=True, exist_ok=True)
        log = open(Path(self.log_dir) / f"carla_{self.port}.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True, env=os.environ.copy())
        log.close()
        if wait:
            self.wait_ready(timeout)
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait_ready(self, timeout: float = 180.0, host: str = "localhost") -> None:
        """Block until the RPC port answers; raise if the process dies or time runs out."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.process is not None and not self.alive():
                raise RuntimeError(f"CARLA server on port {self.port} exited with code "
                                   f"{self.process.returncode}; see {self.log_dir}/"
                                   f"carla_{self.port}.log")
            if port_open(host, self.port, 1.0):
                return
            time.sleep(1.0)
        raise TimeoutError(f"CARLA server on port {self.port} did not open its port within "
                           f"{timeout:.0f} s; see {self.log_dir}/carla_{self.port}.log")

    def stop(self, timeout: float = 20.0) -> None:
        """Terminate the server's process group (CarlaUE4.sh starts a child process)."""
        if self.process is None:
            return
        if self.alive():
            import signal

            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout)
        self.process = None

    def restart(self, timeout: float = 180.0) -> None:
        self.stop()
        self.start(wait=True, timeout=timeout)


def launch_servers(carla_root: str, num: int, port: int = 2000, gpus: Sequence[int] = (),
                   timeout: float = 180.0, **kw) -> list[CarlaServer]:
    """`num` servers on ports port, port + 3, ...; GPUs assigned round-robin."""
    servers = [CarlaServer(carla_root, port + PORT_STEP * i,
                           gpu=gpus[i % len(gpus)] if gpus else None, **kw) for i in range(num)]
    try:
        for s in servers:
            s.start(wait=False)
        for s in servers:
            s.wait_ready(timeout)
    except BaseException:
        for s in servers:
            s.stop()
        raise
    return servers
