"""A real broker in a subprocess, for end-to-end tests.

The broker is started with ``--port 0`` (or a fixed port on restart) and a
temporary data dir; its log lines are read by a thread, and start-up waits for
the "ready" line with a bound, never a sleep.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

READY = re.compile(r"Ferry broker ready on ([\d.]+):(\d+)")
ROOT = Path(__file__).resolve().parent.parent


class BrokerProcess:
    def __init__(self, data_dir: Path, *args: str, env: dict | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.args = list(args)
        self.env = env or {}
        self.host = "127.0.0.1"
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.lines: list[str] = []
        self._ready = threading.Event()
        self._reader: threading.Thread | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> "BrokerProcess":
        self._ready.clear()
        env = dict(os.environ)
        env.pop("FERRY_CONFIG", None)
        env.update(self.env)
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        cmd = [
            sys.executable, "-m", "broker",
            "--host", self.host, "--port", str(self.port),
            "--data-dir", str(self.data_dir), *self.args,
        ]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, env=env, cwd=str(ROOT))
        self._reader = threading.Thread(target=self._read, args=(self.proc,), daemon=True)
        self._reader.start()
        if not self._ready.wait(timeout):
            self.kill()
            raise RuntimeError("broker did not become ready:\n" + "".join(self.lines[-40:]))
        return self

    def _read(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            self.lines.append(line)
            match = READY.search(line)
            if match:
                self.port = int(match.group(2))
                self._ready.set()
        self._ready.set()  # exited: let start() report

    def log_text(self) -> str:
        return "".join(self.lines)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait for a clean exit; returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            if self._reader:
                self._reader.join(5)

    def kill(self) -> None:
        """SIGKILL: the broker gets no chance to flush or mark a clean shutdown."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if self._reader:
            self._reader.join(5)

    def restart(self, *, kill: bool = False) -> "BrokerProcess":
        """Stop (or kill) and start again on the same port and data dir."""
        if kill:
            self.kill()
        else:
            self.stop()
        return self.start()
