"""EngineSupervisor: start the inference engine, restart it when it dies or hangs, and give up when failures repeat
(``robovlm.runtime.supervisor.RestartPolicy``).

While the engine is down the robot is stopped (``hold_cause`` is ``engine_down``), diagnostics report ERROR, and every
failure and restart is logged and counted. A step that outlives ``engine_step_timeout_s`` means a hung process: it
is killed and treated like a crash. Start-up watches the ``cancel`` event (the node's shutdown request), so a SIGTERM
during a long model load ends the process at once.

Owns: the engine, the restart policy, why the engine is down, the last error and the restart count.
Called by: the node (``start``, ``reset``, ``close``), the inference loop (``engine``, ``step_failed``, ``recover``),
the control loop (``hold_cause``) and diagnostics (``snapshot``). It calls ``on_fatal(reason)`` when it gives up;
the node wires that to its lifecycle error transition. No rclpy.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from robovlm.runtime.engine import limit_threads
from robovlm.runtime.factory import build_engine, build_remote_engine
from robovlm.runtime.supervisor import RestartPolicy
from robovlm.runtime.worker import EngineCancelled, EngineProcess

from .settings import Settings
from .status import NodeStatus


@dataclass(frozen=True)
class EngineSnapshot:
    name: str
    device_name: str
    down: str | None
    """Why the engine is down (the robot is stopped), else None."""
    restarts: int
    last_error: str
    remote: dict[str, Any] | None = None
    """The remote engine's last step (``RemoteEngine.remote_status``); None for a local engine."""


class EngineSupervisor:
    def __init__(
        self,
        settings: Settings,
        *,
        status: NodeStatus,
        cancel: threading.Event,
        on_fatal: Callable[[str], None],
        wrap: Callable[[Any], Any] | None = None,
    ) -> None:
        self.settings = settings
        self._wrap = wrap  # the simulator tools' slowed engine (robovlm_node.tools.sim_node); None on a robot
        self._status = status
        self._cancel = cancel
        self._on_fatal = on_fatal
        self._policy = RestartPolicy(
            max_restarts=settings.engine_max_restarts, window_s=settings.engine_restart_window_s
        )
        self._lock = threading.Lock()
        self._engine: Any = None
        self._down: str | None = None
        self._last_error = ""
        self._restarts = 0

    @property
    def engine(self) -> Any:
        """The running engine (``robovlm.runtime.engine.Engine`` or its ``EngineProcess``); None after close."""
        return self._engine

    def start(self) -> Any:
        """Load the engine; ``EngineCancelled`` when shutdown was requested during loading, any load error as is."""
        self._engine = self._build()
        return self._engine

    def _build(self) -> Any:
        engine = self._load()
        return self._wrap(engine) if self._wrap is not None else engine

    def _load(self) -> Any:
        s = self.settings
        if s.engine == "remote":
            return build_remote_engine(
                s.server_url,
                token_file=s.server_token_file,
                timeout_s=s.server_timeout_s,
                jpeg_quality=s.jpeg_quality,
            )
        cache = s.onnx_cache_dir or None
        if s.engine_process:
            return EngineProcess(
                s.engine,
                s.model_path,
                device=s.device,
                threads=s.engine_threads,
                step_timeout_s=s.engine_step_timeout_s,
                cancel=self._cancel,
                start_timeout_s=900.0 if s.onnx_tensorrt else 180.0,  # TensorRT builds engines
                dtype=s.dtype,
                tensorrt=s.onnx_tensorrt,
                trt_cache_dir=cache,
            )
        limit_threads(s.engine_threads)
        return build_engine(
            s.engine, s.model_path, device=s.device, dtype=s.dtype, tensorrt=s.onnx_tensorrt, trt_cache_dir=cache
        )

    def reset(self) -> None:
        """Clear the engine's streaming state (on activate); raises when the engine cannot (its process died)."""
        self._engine.reset()

    def hold_cause(self) -> str | None:
        with self._lock:
            return "engine_down" if self._down else None

    def step_failed(self, error: Exception) -> None:
        """One model step raised (the engine is alive): counted and kept as the last error; the loop goes on."""
        with self._lock:
            self._last_error = f"{type(error).__name__}: {error}"
        self._status.count("inference_error", self._last_error, error=True)

    def unavailable(self, error: Exception) -> None:
        """The engine is alive but cannot answer (a model server that is down or slow): hold the robot until a step
        succeeds (``available``); logged when it starts, counted every time."""
        down = f"{type(error).__name__}: {error}"
        with self._lock:
            first = self._down is None
            self._down = self._last_error = down
        self._status.count("engine_unavailable", down, error=True, log=first)

    def available(self) -> None:
        """A step succeeded: release a hold set by ``unavailable``."""
        with self._lock:
            if self._down is None:
                return
            self._down = None
        self._status.log.info("inference engine answering again; robot released")

    def recover(self, error: Exception, stop: threading.Event) -> bool:
        """The engine process died or hung: hold the robot, restart it after the policy's delay. False when the
        caller's loop should end (stopped, or failures repeated and the node is going to the error state)."""
        log = self._status.log
        while True:
            down = f"{type(error).__name__}: {error}"
            with self._lock:
                self._down = self._last_error = down
            log.error(f"[engine_down] {down}; robot stopped")
            delay = self._policy.failure(time.monotonic())
            if hasattr(self._engine, "kill"):
                self._engine.kill()
            if delay is None:
                p = self._policy
                self._on_fatal(
                    f"the inference engine failed {p.recent()} times within {p.window_s:g} s "
                    f"(engine_max_restarts={p.max_restarts}); last: {down}"
                )
                return False
            log.warning(f"restarting the inference engine in {delay:.1f} s")
            if stop.wait(delay):
                return False
            t0 = time.monotonic()
            try:
                engine = self._build()
                engine.reset()
            except EngineCancelled:
                return False
            except Exception as exc:  # counts as the next failure of the same policy
                error = exc
                continue
            with self._lock:
                self._engine, self._down = engine, None
                self._restarts += 1
                n = self._restarts
            log.info(f"inference engine restarted in {time.monotonic() - t0:.1f} s (restart {n})")
            return True

    def snapshot(self) -> EngineSnapshot:
        engine = self._engine
        with self._lock:
            return EngineSnapshot(
                name=getattr(engine, "name", "none"),
                device_name=getattr(engine, "device_name", self.settings.device),
                down=self._down,
                restarts=self._restarts,
                last_error=self._last_error,
                remote=engine.remote_status() if hasattr(engine, "remote_status") else None,
            )

    @property
    def restarts(self) -> int:
        with self._lock:
            return self._restarts

    def close(self) -> None:
        """Free the engine (its process, if it has one)."""
        engine, self._engine = self._engine, None
        if engine is not None and hasattr(engine, "close"):
            engine.close()
