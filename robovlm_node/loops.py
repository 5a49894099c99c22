"""The node's two loops, as a mixin of ``RoboVLMNode`` (state and publishers live on the node).

- the inference loop runs the engine's streaming ``step()`` on each new head-camera frame, as fast as the model
  allows, and hands an ``ActionChunk`` (stamped with the frame's arrival time on the node clock) to the scheduler;
- the watchdog, on the steady clock, notices a node clock that stopped (a stalled ``/clock``) and logs inputs that
  go stale or come back;
- the control loop, paced on absolute deadlines of the node clock at ``control_rate_hz`` (so ``use_sim_time``
  works and no subscription callback delays a tick), takes the action due now, passes it through the safety filter
  and publishes it. A slow or crashed model makes the robot stop, never run on a stale command.
"""

from __future__ import annotations

import os
import threading
import time

from rclpy.duration import Duration

from robovlm.runtime.engine import EngineError
from robovlm.runtime.safety import STOP_CAUSES
from robovlm.runtime.scheduler import ActionChunk
from robovlm.runtime.timecheck import ClockWatch

from .convert import make_twist
from .inputs import INPUT_LABELS

STARTUP_GRACE_S = 5.0
"""After activation, missing inputs and the missing first chunk are the normal start (INFO) for this long."""


class NodeLoops:
    """Inference and control loops; mixed into ``RoboVLMNode``, whose attributes they use."""

    # ----------------------------------------------------------------------------------------------- inference
    def _inference_loop(self, stop: threading.Event) -> None:
        last_seq = -1
        timeout = self.settings.input_timeout_s
        while not stop.is_set():
            now = self.now()
            with self._lock:
                head = self._inputs.get("head")
                hand = self._inputs.get("hand")
                st = self._inputs.get("state")
                instruction, refused, epoch = self._instruction, self._instruction_error, self._epoch
            ages = self.input_ages(now)
            if (
                head is None
                or head.seq == last_seq
                or any(a is None or a > timeout for a in ages.values())
                or self.stamp_hold() is not None
            ):  # a stamp fault on a required input (head too)
                stop.wait(0.002)
                continue
            if not instruction:
                if not refused:
                    self._count("no_instruction", "no instruction yet: set the 'instruction' parameter or publish one")
                stop.wait(0.05)
                continue
            use_hand = hand is not None and hand.fault is None and now - hand.rx_time <= timeout
            frames = self.camera_frames({"head": head, "hand": hand if use_hand else None})
            head_rgb, hand_rgb = frames["head"], frames["hand"]  # hand None: the model's missing-hand marker
            if head_rgb is None:  # undecodable or nothing to drive on (held at zero): wait for the next frame
                last_seq = head.seq
                continue
            t0 = time.perf_counter()
            try:
                actions = self.engine.step(head_rgb, hand_rgb, None if st is None else st.value, instruction)
            except EngineError as exc:  # the process died or hung: restart it (the robot is stopped meanwhile)
                if not self._recover_engine(exc, stop):
                    return
                continue
            except Exception as exc:  # one bad step: keep the loop alive; the control loop stops the robot meanwhile
                self._last_error = f"{type(exc).__name__}: {exc}"
                self._count("inference_error", self._last_error, error=True)
                stop.wait(0.05)
                continue
            latency = time.perf_counter() - t0
            last_seq = head.seq
            with self._lock:
                if epoch != self._epoch:
                    continue  # the instruction changed during the step: this chunk belongs to the old task
                self._pending_frame_stamp = head.rx_time if self.settings.use_receive_time else head.stamp
            self.scheduler.push(ActionChunk(stamp=head.rx_time, dt=self.engine.stats.action_dt, actions=actions))
            self._infer_events.add(self.now(), latency)

    # ----------------------------------------------------------------------------------------------- watchdog
    def _watchdog_loop(self, stop: threading.Event) -> None:
        """On the steady clock (it must run when the node clock does not): a stalled node clock publishes one zero
        and is reported; inputs that go stale or come back are logged once each way."""
        watch = ClockWatch(stall_s=self.settings.clock_stall_timeout_s)
        while not stop.wait(0.05):
            event = watch.update(time.monotonic(), self.now())
            if event == "stalled":
                self._publish_zero()
                self._clock_stalled = True
                self._last_cause = "clock_stalled"
                self.get_logger().error(
                    f"[clock_stalled] the node clock has not advanced for {watch.stall_s:g} s"
                    + (
                        " (use_sim_time: is /clock still published?)"
                        if self.get_parameter("use_sim_time").value
                        else ""
                    )
                    + "; zero command published, robot stopped"
                )
            elif event == "resumed":
                self._clock_stalled = False
                self.get_logger().info("the node clock advances again")
            self._log_input_health()

    def _still_waiting(self, cause: str | None, ages: dict[str, float | None], now: float) -> bool:
        """Whether the node is still starting (activated, the robot held until every required input has arrived
        and the model has given its first chunk). What it waits for is logged at INFO when it changes, and once at
        WARN if it still waits after ``STARTUP_GRACE_S``; the first command that is not held ends the start."""
        if cause not in ("stale_input", "no_fresh_chunk"):  # driving, or held by a fault that reports itself
            self._waiting_since, self._waiting_for = None, ""
            if cause not in STOP_CAUSES:
                self.get_logger().info("inputs and model ready: driving")
            return False
        timeout = self.settings.input_timeout_s
        missing = [INPUT_LABELS[k] for k, age in ages.items() if age is None or age > timeout]
        what = ", ".join(missing) if missing else "the model's first action chunk"
        if what != self._waiting_for:
            self._waiting_for = what
            self.get_logger().info(f"waiting for {what}")
        if now - self._waiting_since > STARTUP_GRACE_S and self._flipped("startup_slow", True):
            self.get_logger().warning(f"still waiting for {what} {STARTUP_GRACE_S:g} s after activation; robot stopped")
        return True

    def _log_input_health(self) -> None:
        if self._waiting_since is not None:  # starting: the control loop says what it waits for
            return
        now, timeout = self.now(), self.settings.input_timeout_s
        required = self.required_inputs()
        used = {"head": True, "hand": self.engine.uses_hand, "state": self.engine.uses_state}
        for key, monitor in self.monitors.items():
            if not used[key]:
                continue
            age = monitor.age(now)
            stale = age is None or age > timeout
            if not self._flipped(f"stale:{key}", stale):
                continue
            if not stale:
                self.get_logger().info(f"{monitor.label} on {monitor.topic} is back")
                continue
            what = (
                "required: robot stopped"
                if key in required
                else "not required: the model runs on its missing-input marker"
            )
            self.get_logger().warning(
                f"{monitor.label} on {monitor.topic} is "
                + ("not publishing" if age is None else f"stale ({age:.2f} s)")
                + f" ({what})"
            )

    # ----------------------------------------------------------------------------------------------- control
    def hold_cause(self) -> str | None:
        """A fault found outside the safety filter that stops the robot now (``robovlm.runtime.safety.HOLD_CAUSES``)."""
        with self._lock:
            if self._engine_down:
                return "engine_down"
            if self._instruction_error:
                return "bad_instruction"
        if self._clock_stalled:
            return "clock_stalled"
        return self.input_hold()

    def _set_control_scheduling(self) -> None:
        """Real-time priority for this (control) thread, as ros2_control does; measured in ``make bench``:
        with the model saturating both cores, p99 tick jitter drops from about 5% of the period to under 1%."""
        prio = self.settings.control_rt_priority
        if prio == 0 or not hasattr(os, "sched_setscheduler"):
            self.control_scheduling = "SCHED_OTHER"
            return
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(prio))
            self.control_scheduling = f"SCHED_FIFO {prio}"
        except OSError as exc:
            self.control_scheduling = f"SCHED_OTHER (SCHED_FIFO refused: {exc.strerror})"
            self.get_logger().warning(
                f"control thread runs without real-time priority ({exc.strerror}); tick "
                "jitter grows under load. Grant it with an rtprio limit "
                "(/etc/security/limits.conf) or CAP_SYS_NICE, or set control_rt_priority 0"
            )

    def _control_loop(self, stop: threading.Event) -> None:
        """Tick at absolute deadlines (no drift); after an overrun of more than a period, resynchronize. The first
        tick is a start, not an overrun: it may wake late when a paused sim clock resumes."""
        self._set_control_scheduling()
        clock = self.get_clock()
        period = Duration(nanoseconds=int(1e9 / self.settings.control_rate_hz))
        deadline = clock.now()
        ticks = 0
        while not stop.is_set():
            deadline = deadline + period
            now = clock.now()
            if now > deadline + period:
                if ticks > 1:
                    self._count("control_overrun", "control tick more than one period late; resynchronizing")
                deadline = now
            try:
                reached = clock.sleep_until(deadline, context=self.context)
            except Exception as exc:  # clock or context gone during shutdown
                self.get_logger().debug(f"control loop ends: {exc}")
                return
            if stop.is_set() or not self.context.ok():
                return
            if not reached:  # ROS time switched on or off: the old deadline belongs to the other clock
                self._count(
                    "clock_changed",
                    "the node clock changed source (use_sim_time); control deadlines restart on the new clock",
                )
                deadline = clock.now()
                continue
            ticks += 1
            try:
                self._on_control()
            except Exception as exc:  # the control loop must outlive any bug in one tick: stop the robot, go on
                self._count("control_error", f"{type(exc).__name__}: {exc}", error=True)
                self.stops["control_error"] += 1
                self.control_ticks += 1
                self._last_cause = "control_error"
                self._publish_zero()

    def _on_control(self) -> None:
        stamp = self.get_clock().now()  # one reading: the safety filter's time and the command's stamp agree
        now = stamp.nanoseconds * 1e-9
        action = self.scheduler.action_at(now) if self._active else None
        ages = self.input_ages(now)
        decision = self.safety.apply(action, now=now, active=self._active, input_ages=ages, hold=self.hold_cause())
        if self._waiting_since is not None and self._still_waiting(decision.cause, ages, now):
            pass  # after activation, before the inputs and the first chunk: said once at INFO (_still_waiting)
        elif decision.cause == "stale_input":
            self._count(
                "stale_input", f"input older than {self.settings.input_timeout_s}s or missing: {ages}; stopping"
            )
        elif decision.cause == "no_fresh_chunk":
            self._count("no_fresh_chunk", "no fresh action chunk (model slow or stalled); stopping")
        elif decision.cause == "nonfinite_output":
            self._count("nonfinite_output", "model output is not finite; stopping")
        with self._publish_lock:
            if not self._active:
                return
            self._cmd_pub.publish(
                make_twist(
                    decision.command,
                    self.settings.action_fields,
                    stamped=self.settings.stamped,
                    stamp=stamp.to_msg(),
                    frame_id=self.settings.frame_id,
                )
            )
            self.last_command = decision.command
        self._control_events.add(now)
        self.control_ticks += 1
        self._last_cause = decision.cause
        if decision.cause in self.stops:
            self.stops[decision.cause] += 1
        with self._lock:
            frame_stamp, self._pending_frame_stamp = self._pending_frame_stamp, None
        if frame_stamp is not None and decision.cause not in STOP_CAUSES:
            self._e2e_events.add(now, now - frame_stamp)  # camera stamp -> first command that used the frame
