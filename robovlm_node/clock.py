"""RosLoopClock: the node clock as the control loop's ``LoopClock`` (integer nanoseconds, absolute sleeps).

The one place the loops meet rclpy's clock: ``Clock.sleep_until`` wakes early with False when ROS time is switched on
or off, and raises once the context is shut down; both become the loop's ``sleep_until_ns`` contract.
"""

from __future__ import annotations

from rclpy.clock import Clock
from rclpy.context import Context
from rclpy.time import Time

from .control import ClockGone


class RosLoopClock:
    def __init__(self, clock: Clock, context: Context) -> None:
        self._clock = clock
        self._context = context

    def now_ns(self) -> int:
        return int(self._clock.now().nanoseconds)

    def now(self) -> float:
        """Seconds, for the parts that time messages."""
        return float(self._clock.now().nanoseconds) * 1e-9

    def sleep_until_ns(self, deadline_ns: int) -> bool:
        try:
            reached = self._clock.sleep_until(
                Time(nanoseconds=deadline_ns, clock_type=self._clock.clock_type), context=self._context
            )
        except Exception as exc:  # clock or context gone during shutdown
            raise ClockGone(str(exc)) from exc
        if not self._context.ok():
            raise ClockGone("context shut down")
        return bool(reached)
