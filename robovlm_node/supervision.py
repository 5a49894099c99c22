"""Engine supervision, as a mixin of ``RoboVLMNode``: start the inference engine, restart it when it dies or hangs,
and give up into the lifecycle error state when failures repeat (``robovlm.runtime.supervisor.RestartPolicy``).

While the engine is down the robot is stopped (``engine_down`` holds the control loop at zero), diagnostics report
ERROR, and every failure and restart is logged and counted. A step that outlives ``engine_step_timeout_s`` means a
hung process: it is killed and treated like a crash. Start-up watches the node's ``shutdown_requested`` event, so a
SIGTERM during a long model load ends the process at once.
"""

from __future__ import annotations

import threading
import time

from rclpy.lifecycle import TransitionCallbackReturn

from robovlm.runtime.engine import limit_threads
from robovlm.runtime.factory import build_engine
from robovlm.runtime.worker import EngineCancelled, EngineProcess

from .parameters import Settings


class EngineSupervision:
    """Mixed into ``RoboVLMNode``; uses its settings, scheduler, logger and lifecycle transitions."""

    shutdown_requested: threading.Event

    def _build_engine(self, s: Settings):
        """The configured engine; ``EngineCancelled`` when shutdown was requested during loading."""
        options = {"dtype": s.dtype, "tensorrt": s.onnx_tensorrt, "trt_cache_dir": s.onnx_cache_dir or None}
        if s.engine_process:
            return EngineProcess(
                s.engine,
                s.model_path,
                device=s.device,
                threads=s.engine_threads,
                step_timeout_s=s.engine_step_timeout_s,
                cancel=self.shutdown_requested,
                start_timeout_s=900.0 if s.onnx_tensorrt else 180.0,  # TensorRT builds engines
                **options,
            )
        limit_threads(s.engine_threads)
        return build_engine(s.engine, s.model_path, device=s.device, **options)

    def _recover_engine(self, error: Exception, stop: threading.Event) -> bool:
        """The engine process died or hung: stop the robot, restart it after the policy's delay. False when the loop
        should end (stopped, or failures repeated and the node is going to the error state)."""
        while True:
            with self._lock:
                self._engine_down = f"{type(error).__name__}: {error}"
                self._epoch += 1
            self.scheduler.reset()
            self._last_error = self._engine_down
            self.get_logger().error(f"[engine_down] {self._engine_down}; robot stopped")
            delay = self._restart_policy.failure(time.monotonic())
            old = self.engine
            if hasattr(old, "kill"):
                old.kill()
            if delay is None:
                p = self._restart_policy
                self._go_to_error(
                    f"the inference engine failed {p.recent()} times within {p.window_s:g} s "
                    f"(engine_max_restarts={p.max_restarts}); last: {self._engine_down}"
                )
                return False
            self.get_logger().warning(f"restarting the inference engine in {delay:.1f} s")
            if stop.wait(delay):
                return False
            t0 = time.monotonic()
            try:
                engine = self._build_engine(self.settings)
                engine.reset()
            except EngineCancelled:
                return False
            except Exception as exc:  # counts as the next failure of the same policy
                error = exc
                continue
            self.engine = engine
            self.engine_restarts += 1
            with self._lock:
                self._engine_down = None
            self.get_logger().info(
                f"inference engine restarted in {time.monotonic() - t0:.1f} s (restart {self.engine_restarts})"
            )
            return True

    def _go_to_error(self, reason: str) -> None:
        """Leave active through the lifecycle error state (deactivate returns ERROR; on_error frees everything and
        the node ends unconfigured, as ros2/demos lifecycle_py does), on a thread of its own: the caller is one of
        the loops that the transition joins."""
        self._fatal_reason = reason
        self.get_logger().fatal(f"going to the lifecycle error state: {reason}")

        def run() -> None:
            self.trigger_deactivate()
            if self.exit_on_error:
                self.shutdown_requested.set()

        threading.Thread(target=run, name="robovlm-error", daemon=True).start()

    def _deactivate_result(self) -> TransitionCallbackReturn:
        return TransitionCallbackReturn.ERROR if self._fatal_reason else TransitionCallbackReturn.SUCCESS
