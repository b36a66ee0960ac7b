"""A real OpenAI-compatible server on localhost for the tests: ``transformers serve``.

It serves any local model directory named in a request (``model`` = the directory path), fully
offline (``HF_HUB_OFFLINE=1``). :class:`ServeProcess` starts it on a free port, waits for
``/health``, and can kill it (SIGKILL, to simulate a crash) and start it again on the same port.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServeProcess:
    """``transformers serve`` on 127.0.0.1:``port`` (only localhost: nothing outside can reach it)."""

    def __init__(self, log_dir: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.log_dir = log_dir
        self.process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        """The OpenAI API root, as the judge spec wants it."""
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout_s: float = 120.0) -> None:
        """Start the server and wait until ``/health`` answers."""
        executable = Path(sys.executable).parent / "transformers"
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
        log = open(self.log_dir / f"serve-{self.port}.log", "ab")  # noqa: SIM115 (owned by Popen)
        self.process = subprocess.Popen(
            [str(executable), "serve", "--host", "127.0.0.1", "--port", str(self.port),
             "--device", "cpu", "--log-level", "warning"],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"transformers serve exited ({self.process.returncode}); see "
                                   f"{self.log_dir}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2):
                    return
            except OSError:
                time.sleep(0.3)
        self.kill()
        raise RuntimeError(f"transformers serve did not answer on port {self.port}")

    def kill(self) -> None:
        """SIGKILL the server (and anything it started), as a crash would."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)
        self.process = None
