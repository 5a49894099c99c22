"""RosLoopClock: the node clock as the control loop's ``LoopClock`` (integer nanoseconds, absolute sleeps).

The one place the loops meet rclpy's clock: ``Clock.sleep_until`` wakes early with False when ROS time is switched on
or off, and raises once the context is shut down; both become the loop's ``sleep_until_ns`` contract.

On sim time a sleep also ends when the loop is asked to stop: ``Clock.sleep_until`` wakes only for the clock, so on
a paused simulator or bag (``/clock`` no longer published) the control loop slept through its stop and
deactivation waited out the loop's one-second join (measured in ``make demo LATENCY_MS=300``: 1.0-1.2 s per
deactivation, past the node's one-second clock watchdog). The sim-time sleep waits on a jump callback of the clock and
looks at the stop event every ``STOP_POLL_S`` of wall time.
"""

from __future__ import annotations

import threading

from rclpy.clock import Clock, ClockChange, ClockType, JumpThreshold, TimeJump
from rclpy.context import Context
from rclpy.duration import Duration
from rclpy.time import Time

from .control import ClockGone

STOP_POLL_S = 0.02
"""Wall seconds between looks at the stop event during a sim-time sleep."""


class RosLoopClock:
    def __init__(self, clock: Clock, context: Context) -> None:
        self._clock = clock
        self._context = context

    def now_ns(self) -> int:
        return int(self._clock.now().nanoseconds)

    def now(self) -> float:
        """Seconds, for the parts that time messages."""
        return float(self._clock.now().nanoseconds) * 1e-9

    def sleep_until_ns(self, deadline_ns: int, stop: threading.Event | None = None) -> bool:
        sim_time = self._clock.clock_type == ClockType.ROS_TIME and getattr(self._clock, "ros_time_is_active", False)
        if stop is not None and sim_time:
            return self._sleep_on_sim_time(deadline_ns, stop)
        try:
            reached = self._clock.sleep_until(
                Time(nanoseconds=deadline_ns, clock_type=self._clock.clock_type), context=self._context
            )
        except Exception as exc:  # clock or context gone during shutdown
            raise ClockGone(str(exc)) from exc
        if not self._context.ok():
            raise ClockGone("context shut down")
        return bool(reached)

    def _sleep_on_sim_time(self, deadline_ns: int, stop: threading.Event) -> bool:
        """Until the sim clock reads ``deadline_ns`` (True), ROS time is switched off (False) or ``stop`` is set
        (False: the caller looks at its stop event first)."""
        woke = threading.Event()
        changed = False

        def on_jump(jump: TimeJump) -> None:
            nonlocal changed
            if jump.clock_change in (ClockChange.ROS_TIME_ACTIVATED, ClockChange.ROS_TIME_DEACTIVATED):
                changed = True
            if changed or self.now_ns() >= deadline_ns:
                woke.set()

        threshold = JumpThreshold(min_forward=Duration(nanoseconds=1), min_backward=None, on_clock_change=True)
        try:
            with self._clock.create_jump_callback(threshold, post_callback=on_jump):
                while not changed and self.now_ns() < deadline_ns:
                    woke.wait(STOP_POLL_S)
                    if stop.is_set():
                        return False
                    if not self._context.ok():
                        raise ClockGone("context shut down")
        except ClockGone:
            raise
        except Exception as exc:  # clock or context gone during shutdown
            raise ClockGone(str(exc)) from exc
        return not changed
