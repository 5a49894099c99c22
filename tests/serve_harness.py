"""``robovlm serve`` as the tests run it: a real local Ray Serve in its own process, on loopback, stopped with SIGTERM
as a user would stop it; every process it started is found by a mark in its environment (Ray's own processes
inherit it), so a test can require that none is left behind."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

TOKEN = "test-token-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_token(path: Path, token: str = TOKEN) -> Path:
    path.write_text(token + "\n")
    path.chmod(0o600)
    return path


class Server:
    def __init__(self, checkpoint: str | Path, workdir: Path, *, args: tuple[str, ...] = ()) -> None:
        self.checkpoint = str(checkpoint)
        self.token_file = write_token(workdir / "token")
        self.port = free_port()
        self.mark = uuid.uuid4().hex
        self.args = args
        self.log = workdir / f"serve-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 180.0) -> float:
        """Start and wait for ``/healthz``; returns the seconds it took."""
        t0 = time.monotonic()
        env = {**os.environ, "ROBOVLM_TEST_SERVER": self.mark, "RAY_AUTH_MODE": "disabled"}
        cmd = [sys.executable, "-m", "robovlm.cli", "serve", self.checkpoint, "--port", str(self.port)]
        cmd += ["--token-file", str(self.token_file), *self.args]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        while time.monotonic() - t0 < timeout_s:
            if self.proc.poll() is not None:
                raise RuntimeError(f"robovlm serve exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                if self.request("GET", "/healthz", token=None)[0] == 200:
                    return time.monotonic() - t0
            except OSError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"robovlm serve not healthy within {timeout_s} s:\n{self.tail()}")

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 90.0) -> int:
        """Signal the server and wait for it and every process it started to end; returns its exit status."""
        assert self.proc is not None
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout_s)
        deadline = time.monotonic() + timeout_s
        while self.processes() and time.monotonic() < deadline:
            time.sleep(0.5)
        return code

    def processes(self) -> list[int]:
        """Processes carrying this server's mark (the server and what Ray started for it)."""
        pids = []
        needle = f"ROBOVLM_TEST_SERVER={self.mark}".encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                if needle in (entry / "environ").read_bytes().split(b"\0"):
                    pids.append(int(entry.name))
            except OSError:
                continue
        return pids

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        *,
        token: str | None = TOKEN,
        headers: dict[str, str] | None = None,
        timeout_s: float = 30.0,
    ) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout_s)
        try:
            h = dict(headers or {})
            if token is not None:
                h["Authorization"] = f"Bearer {token}"
            conn.request(method, path, body=body, headers=h)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def close(self) -> None:
        """Whatever happened in the test: nothing of this server stays running."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.stop(timeout_s=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        for pid in self.processes():
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
