"""Time sanity for a robot that must not act on old or impossible data (no ROS here; the node feeds it times).

- ``stamp_fault``: a camera frame whose header stamp is older than the input timeout, or ahead of the node clock by
  more than a tolerance, must not drive the robot (a camera driver that buffers, a clock that jumped, a replayed
  topic from another machine, a zero stamp that was never set).
- ``ClockWatch``: under ``use_sim_time`` the node clock advances only when ``/clock`` does; a stalled simulator or
  bag player would freeze every node-clock timer, including the control loop, and leave the last command in force
  downstream. The watch runs on the steady clock and says when the node clock stopped and when it moved again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def stamp_fault(stamp: float, now: float, *, max_age_s: float, max_lead_s: float) -> str | None:
    """``"stale_stamp"`` when ``now - stamp > max_age_s``, ``"future_stamp"`` when ``stamp - now > max_lead_s``, else
    None. Times in seconds on the same clock; a non-finite stamp is stale."""
    if not math.isfinite(stamp):
        return "stale_stamp"
    if now - stamp > max_age_s:
        return "stale_stamp"
    if stamp - now > max_lead_s:
        return "future_stamp"
    return None


@dataclass
class ClockWatch:
    """Feed it (steady time, node time) pairs; it reports the moment the node clock has stood still for ``stall_s``
    of steady time, and the moment it advances again."""

    stall_s: float
    """Steady seconds without node-clock progress that count as a stall."""
    _last_node: float | None = None
    _since: float | None = None
    stalled: bool = False

    def __post_init__(self) -> None:
        if not (math.isfinite(self.stall_s) and self.stall_s > 0):
            raise ValueError(f"stall_s must be finite and > 0, got {self.stall_s}")

    def reset(self) -> None:
        self._last_node, self._since, self.stalled = None, None, False

    def update(self, steady: float, node: float) -> str | None:
        """``"stalled"`` once when a stall begins, ``"resumed"`` once when it ends, otherwise None."""
        if self._last_node is None or node > self._last_node:
            self._last_node, self._since = node, steady
            if self.stalled:
                self.stalled = False
                return "resumed"
            return None
        if not self.stalled and self._since is not None and steady - self._since >= self.stall_s:
            self.stalled = True
            return "stalled"
        return None

    def stalled_for(self, steady: float) -> float:
        return 0.0 if self._since is None else steady - self._since
