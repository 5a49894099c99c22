"""``LocalServer``: ``robovlm serve`` as a child process on loopback, with a fresh token; for the demo
(``make demo ENGINE=remote``), the serving benchmark and the tests. Started as a user starts it and stopped as a
user stops it (SIGTERM), so what they exercise is the command itself."""

from __future__ import annotations

import http.client
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_token(path: Path, token: str | None = None) -> str:
    """A token file of mode 600 (``token`` or a random one); returns the token."""
    token = token or secrets.token_urlsafe(24)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    path.chmod(0o600)
    return token


class LocalServer:
    def __init__(
        self,
        checkpoint: str | Path,
        workdir: Path,
        *,
        args: tuple[str, ...] = (),
        port: int | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.checkpoint = str(checkpoint)
        self.token_file = workdir / "token"
        self.token = write_token(self.token_file)
        self.port = port or free_port()
        self.args = args
        self.env = {**os.environ, **(env or {})}
        self.log = workdir / f"serve-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 180.0) -> float:
        """Start and wait until ``/healthz`` answers; returns the seconds it took."""
        t0 = time.monotonic()
        cmd = [sys.executable, "-m", "robovlm.cli", "serve", self.checkpoint, "--port", str(self.port)]
        cmd += ["--token-file", str(self.token_file), *self.args]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        while time.monotonic() - t0 < timeout_s:
            if self.proc.poll() is not None:
                raise RuntimeError(f"robovlm serve exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                if self.request("GET", "/healthz", token=None, timeout_s=2.0)[0] == 200:
                    return time.monotonic() - t0
            except OSError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"robovlm serve not healthy within {timeout_s} s:\n{self.tail()}")

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 90.0) -> int:
        """Signal the server and wait for it; returns its exit status."""
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(timeout_s)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        *,
        token: str | None = "",
        headers: dict[str, str] | None = None,
        timeout_s: float = 30.0,
    ) -> tuple[int, bytes]:
        """One request on a new connection; ``token`` "" sends this server's token, None none."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout_s)
        try:
            h = dict(headers or {})
            if token is not None:
                h["Authorization"] = f"Bearer {token or self.token}"
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
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.stop(timeout_s=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> LocalServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
