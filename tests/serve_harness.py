"""``robovlm serve`` as the tests run it (``LocalServer``: a real local Ray Serve on loopback, stopped with SIGTERM),
plus a mark in its environment that Ray's own processes inherit, so a test can require that none is left behind."""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path

from robovlm.serving.local_server import LocalServer, free_port, write_token

TOKEN = "test-token-0123456789"
__all__ = ["Server", "free_port", "write_token", "TOKEN"]


class Server(LocalServer):
    def __init__(self, checkpoint: str | Path, workdir: Path, *, args: tuple[str, ...] = ()) -> None:
        self.mark = uuid.uuid4().hex
        super().__init__(checkpoint, workdir, args=args, env={"ROBOVLM_TEST_SERVER": self.mark})
        self.token = TOKEN
        write_token(self.token_file, TOKEN)

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 90.0) -> int:
        """Signal the server and wait for it and every process it started to end."""
        code = super().stop(sig, timeout_s)
        deadline = time.monotonic() + timeout_s
        while self.processes() and time.monotonic() < deadline:
            time.sleep(0.5)
        return code

    def processes(self) -> list[int]:
        """Processes carrying this server's mark (the server and what Ray started for it)."""
        needle = f"ROBOVLM_TEST_SERVER={self.mark}".encode()
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                if needle in (entry / "environ").read_bytes().split(b"\0"):
                    pids.append(int(entry.name))
            except OSError:
                continue
        return pids

    def close(self) -> None:
        """Whatever happened in the test: nothing of this server stays running."""
        super().close()
        for pid in self.processes():
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
