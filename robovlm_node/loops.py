"""The node's two loops, as a mixin of ``RoboVLMNode`` (state and publishers live on the node).

- the inference loop runs the engine's streaming ``step()`` on each new head-camera frame, as fast as the model
  allows, and hands an ``ActionChunk`` (stamped with the frame's arrival time on the node clock) to the scheduler;
- the control loop, paced on absolute deadlines of the node clock at ``control_rate_hz`` (so ``use_sim_time``
  works and no subscription callback delays a tick), takes the action due now, passes it through the safety filter
  and publishes it. A slow or crashed model makes the robot stop, never run on a stale command.
"""

from __future__ import annotations

import os
import threading
import time

from rclpy.duration import Duration

from robovlm.runtime.scheduler import ActionChunk

from .convert import make_twist


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
                instruction = self._instruction
            ages = self.input_ages(now)
            if head is None or head.seq == last_seq or any(a is None or a > timeout for a in ages.values()):
                stop.wait(0.002)
                continue
            if not instruction:
                self._count("no_instruction", "no instruction yet: set the 'instruction' parameter or publish one")
                stop.wait(0.05)
                continue
            hand_rgb = hand.value if (hand is not None and now - hand.rx_time <= timeout) else None
            t0 = time.perf_counter()
            try:
                actions = self.engine.step(head.value, hand_rgb, None if st is None else st.value, instruction)
            except Exception as exc:  # keep the loop alive; the control loop stops the robot meanwhile
                self._last_error = f"{type(exc).__name__}: {exc}"
                self._count("inference_error", self._last_error, error=True)
                stop.wait(0.05)
                continue
            latency = time.perf_counter() - t0
            last_seq = head.seq
            self.scheduler.push(ActionChunk(stamp=head.rx_time, dt=self.engine.stats.action_dt, actions=actions))
            self._infer_events.add(self.now(), latency)
            with self._lock:
                self._pending_frame_stamp = head.stamp  # the next command is the first to use this frame

    # ----------------------------------------------------------------------------------------------- control
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
            self.get_logger().warning(f"control thread runs without real-time priority ({exc.strerror}); tick "
                                      "jitter grows under load. Grant it with an rtprio limit "
                                      "(/etc/security/limits.conf) or CAP_SYS_NICE, or set control_rt_priority 0")

    def _control_loop(self, stop: threading.Event) -> None:
        """Tick at absolute deadlines (no drift); after an overrun of more than a period, resynchronize."""
        self._set_control_scheduling()
        clock = self.get_clock()
        period = Duration(nanoseconds=int(1e9 / self.settings.control_rate_hz))
        deadline = clock.now()
        while not stop.is_set():
            deadline = deadline + period
            now = clock.now()
            if now > deadline + period:
                self._count("control_overrun", "control tick more than one period late; resynchronizing")
                deadline = now
            try:
                if not clock.sleep_until(deadline, context=self.context):
                    return  # context shut down
            except Exception as exc:  # clock or context gone during shutdown
                self.get_logger().debug(f"control loop ends: {exc}")
                return
            if stop.is_set():
                return
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
        decision = self.safety.apply(action, now=now, active=self._active, input_ages=ages)
        if decision.cause == "stale_input":
            self._count("stale_input", f"input older than {self.settings.input_timeout_s}s or missing: {ages}; stopping")
        elif decision.cause == "no_fresh_chunk":
            self._count("no_fresh_chunk", "no fresh action chunk (model slow or stalled); stopping")
        elif decision.cause == "nonfinite_output":
            self._count("nonfinite_output", "model output is not finite; stopping")
        with self._publish_lock:
            if not self._active:
                return
            self._cmd_pub.publish(make_twist(decision.command, self.settings.action_fields, stamped=self.settings.stamped,
                                             stamp=stamp.to_msg(), frame_id=self.settings.frame_id))
            self.last_command = decision.command
        self._control_events.add(now)
        self.control_ticks += 1
        self._last_cause = decision.cause
        if decision.cause in self.stops:
            self.stops[decision.cause] += 1
        with self._lock:
            frame_stamp, self._pending_frame_stamp = self._pending_frame_stamp, None
        if frame_stamp is not None and decision.cause not in ("stale_input", "no_fresh_chunk", "nonfinite_output"):
            self._e2e_events.add(now, now - frame_stamp)  # camera stamp -> first command that used the frame
