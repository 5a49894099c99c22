"""The inference engine in its own process.

Why: a Python control loop shares the interpreter lock with whatever else runs in its process. Measured in the
node benchmark, a model running in a thread beside the control loop delays ticks by several percent of the period
at p99, while the same loop with the model elsewhere stays within a fraction of a percent. A separate process also
means a model that crashes (even in native code) or hangs can only stop the robot, never the control loop.

The child is started with ``spawn`` (never ``fork``: the parent runs DDS threads). Messages over a pipe:
``("step", head, hand, state, instruction)`` -> ``("ok", actions)`` | ``("error", text)``. Frames arrive already
resized to the model's input size (``robovlm.utils.images``), so a message is a few kB.

The child never outlives the node: a thread in it waits on the parent's lifeline (``multiprocessing``'s parent
sentinel, a pipe the kernel closes when the parent ends, SIGKILL included) and ends the child at once. This is
``PR_SET_PDEATHSIG`` without its catch: that fires when the *thread* that started the child ends, and restarts
start the engine from the inference thread, which ends on every deactivate. The child ignores the terminal's
SIGINT, SIGHUP and SIGQUIT (sent to the whole process group): the node decides when the engine stops, after the
final zero command.

Thread budget: the child runs ``threads`` intra-op threads (torch, OpenMP and MKL; ``limit_threads``). On a
2-core robot computer with other jobs running, torch's default of one thread per core oversubscribes the CPU and
inference slows several-fold (measured in ``make soak --load``).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import multiprocessing.connection
import os
import signal
import threading
import time
from dataclasses import asdict
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from ..configs.model import RoboVLMConfig
from ..data.stats import NormStats
from .engine import EngineBase, EngineError, limit_threads
from .factory import build_engine

log = logging.getLogger(__name__)


class EngineStepError(RuntimeError):
    """The model raised on one step (bad input, for example); the process is still usable."""


class EngineCancelled(EngineError):
    """Start-up was abandoned because the caller asked (SIGTERM during configure)."""


def _exit_with_parent() -> None:
    """End this process as soon as its parent has ended (however it ended)."""
    parent = mp.parent_process()
    if parent is None:  # not started by multiprocessing: nothing to watch
        return

    def watch() -> None:
        mp.connection.wait([parent.sentinel])  # readable only when the parent's end of the lifeline is closed
        os._exit(1)

    threading.Thread(target=watch, name="robovlm-lifeline", daemon=True).start()


def _serve(
    conn: Connection, name: str, checkpoint: str, device: str, nice: int, threads: int, options: dict[str, Any]
) -> None:
    _exit_with_parent()
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):  # the terminal's signals go to the whole group
        signal.signal(sig, signal.SIG_IGN)
    if nice:
        os.nice(nice)
    limit_threads(threads)
    try:
        engine = build_engine(name, checkpoint, device=device, **options)
    except Exception as exc:  # reported to the parent, which fails configure with this text
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(
        (
            "ready",
            {
                "name": engine.name,
                "device_name": engine.device_name,
                "config": engine.config.to_dict(),
                "stats": asdict(engine.stats),
            },
        )
    )
    while True:
        try:
            msg = conn.recv()
        except (EOFError, KeyboardInterrupt):
            return
        kind = msg[0]
        if kind == "close":
            return
        try:
            if kind == "reset":
                engine.reset()
                conn.send(("ok", None))
            elif kind == "step":
                conn.send(("ok", engine.step(*msg[1:])))
            else:
                conn.send(("error", f"unknown request {kind!r}"))
        except Exception as exc:  # one bad step must not end the process
            conn.send(("error", f"{type(exc).__name__}: {exc}"))


class EngineProcess(EngineBase):
    """Same interface as ``TorchEngine`` (``step``, ``reset``, ``stats``, ``config``), served by a child process."""

    def __init__(
        self,
        name: str,
        checkpoint: str | Path,
        *,
        device: str = "cpu",
        threads: int = 1,
        nice: int = 0,
        start_timeout_s: float = 180.0,
        step_timeout_s: float = 30.0,
        cancel: threading.Event | None = None,
        **options: Any,
    ) -> None:
        """``nice``: added to the child's niceness (0: same priority as the node); ``step_timeout_s``: a step that
        takes longer means the process hung, and it is killed; ``cancel``: set it to abandon start-up at once;
        ``options``: ``build_engine``'s (dtype, tensorrt, trt_cache_dir, warm_up)."""
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(
            target=_serve,
            args=(child, name, str(checkpoint), device, nice, threads, options),
            name="robovlm-engine",
            daemon=True,
        )
        self._proc.start()
        child.close()
        self.step_timeout_s = step_timeout_s
        self.threads = threads
        end = time.monotonic() + start_timeout_s
        while not self._conn.poll(0.05):  # short slices: a SIGTERM during a long model load ends it at once
            if cancel is not None and cancel.is_set():
                self.kill()
                raise EngineCancelled("model loading cancelled")
            if not self._proc.is_alive() and not self._conn.poll(0):
                self.kill()
                raise EngineError(f"inference process exited during start-up (exit code {self._proc.exitcode})")
            if time.monotonic() > end:
                self.kill()
                raise EngineError(f"inference process did not load the model within {start_timeout_s:.0f} s")
        kind, info = self._recv(0.0, "start")
        if kind != "ready":
            self.close()
            raise EngineError(info)
        self.name = f"{info['name']} (process)"
        self.device_name = info["device_name"]
        self.config = RoboVLMConfig.from_dict(info["config"])
        self.stats = NormStats(**info["stats"])

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    def alive(self) -> bool:
        return self._proc.is_alive()

    def kill(self) -> None:
        """End the child now (a hung or abandoned process); idempotent."""
        if self._proc.is_alive():
            self._proc.kill()
        self._proc.join(timeout=5.0)
        self._conn.close()

    def _recv(self, timeout: float, what: str) -> tuple[str, Any]:
        try:
            ready = self._conn.poll(timeout)
        except (OSError, EOFError) as exc:
            raise EngineError(f"inference process is gone (exit code {self._proc.exitcode}): {exc}") from exc
        if not ready:
            self.kill()
            raise EngineError(f"inference process did not answer '{what}' within {timeout:g} s (hung); killed it")
        try:
            reply: tuple[str, Any] = self._conn.recv()
            return reply
        except (EOFError, OSError) as exc:
            self._proc.join(timeout=1.0)
            raise EngineError(f"inference process died during '{what}' (exit code {self._proc.exitcode})") from exc

    def _call(self, msg: tuple[Any, ...], what: str) -> Any:
        if not self._proc.is_alive():
            raise EngineError(f"inference process is not running (exit code {self._proc.exitcode})")
        try:
            self._conn.send(msg)
        except (OSError, BrokenPipeError) as exc:
            raise EngineError(f"inference process is gone (exit code {self._proc.exitcode}): {exc}") from exc
        kind, value = self._recv(self.step_timeout_s, what)
        if kind == "error":
            raise EngineStepError(value)
        return value

    def reset(self) -> None:
        self._call(("reset",), "reset")

    def step(
        self, head_rgb: np.ndarray, hand_rgb: np.ndarray | None, state: np.ndarray | None, instruction: str
    ) -> np.ndarray:
        actions: np.ndarray = self._call(("step", head_rgb, hand_rgb, state, instruction), "step")
        return actions

    def close(self) -> None:
        if self._proc.is_alive():
            try:
                self._conn.send(("close",))
            except (OSError, BrokenPipeError):
                pass
            self._proc.join(timeout=5.0)
        self.kill()
