"""The simulated operator of ``make flywheel``: watches the policy drive, takes over when it goes wrong, lets go.

A careful teleoperator, as DAgger's expert: it knows where the robot should go from wherever it is now
(``recovery_action``: around the boxes on the instructed side, then to the cup, planned from the current pose, not
from the episode's start as ``WaypointExpert`` is), and takes the robot when

- the policy's command differs from its own by more than ``drift`` m/s for ``drift_s`` seconds, or
- the robot is in danger: closer than ``clearance`` to a box, or level with the boxes on the side the instruction
  does not name (about to fail the task);

then drives for at least ``hold_s`` and until the danger is past, and lets go. Its commands stay within the node's
limits (``max_velocity`` per field, ``max_accel``), so what the base executed is what it meant and the labels the
node records are commands the policy can learn to give.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .expert import MAX_SPEED
from .world import BASE_RADIUS, Layout


def _plan_targets(layout: Layout) -> tuple[float, float, float]:
    """(front, back, lateral): the boxes' near and far x, and the y the robot passes them at."""
    front = min(b.x - b.half_x for b in layout.boxes)
    back = max(b.x + b.half_x for b in layout.boxes)
    reach = max(abs(b.y) + b.half_y for b in layout.boxes)
    return front, back, layout.side * (reach + BASE_RADIUS + 0.15)


def recovery_action(layout: Layout, pose: np.ndarray, *, gain: float = 2.0) -> np.ndarray:
    """Base-frame [vx, vy] towards the goal from world pose (x, y, yaw): first out to the passing side (sideways
    once level with the boxes, so it never cuts a corner into them), then past them, then to the cup."""
    front, back, lateral = _plan_targets(layout)
    x, y = float(pose[0]), float(pose[1])
    off_line = abs(y - lateral) > 0.06
    if x < front - 0.3 and off_line:
        target = np.array([front - 0.3, lateral])
    elif x < back + 0.25:
        target = np.array([x + 0.02, lateral]) if off_line else np.array([back + 0.3, lateral])
    else:
        target = np.array([layout.cup_x, layout.cup_y])
        if np.hypot(*(target - pose[:2])) < 0.15:
            return np.zeros(2)
    v = gain * (target - pose[:2])
    speed = float(np.linalg.norm(v))
    if speed > MAX_SPEED:
        v *= MAX_SPEED / speed
    c, s = np.cos(pose[2]), np.sin(pose[2])
    return np.array([c * v[0] + s * v[1], -s * v[0] + c * v[1]])


def box_clearance(layout: Layout, pose: np.ndarray) -> float:
    """Distance from the base's edge to the nearest box, m (negative: touching)."""
    gaps = []
    for b in layout.boxes:
        dx = max(abs(pose[0] - b.x) - b.half_x, 0.0)
        dy = max(abs(pose[1] - b.y) - b.half_y, 0.0)
        gaps.append(float(np.hypot(dx, dy)) - BASE_RADIUS)
    return min(gaps)


@dataclass
class OperatorSettings:
    drift: float = 0.15
    """m/s between the policy's command and the operator's that counts as going wrong."""
    drift_s: float = 0.5
    """For this long."""
    clearance: float = 0.06
    """m from a box that is too close."""
    hold_s: float = 1.5
    """The shortest takeover, s (long enough to be a lesson: several training windows)."""
    max_velocity: float = 0.3
    """Per field, the node's ``max_velocity``."""
    max_accel: float = 0.8
    """Per field, the node's ``max_accel``."""


class SimulatedOperator:
    def __init__(self, settings: OperatorSettings | None = None, *, dt: float = 0.1) -> None:
        self.settings = settings or OperatorSettings()
        self.dt = dt
        self.layout: Layout | None = None
        self.active = False
        self.since = 0.0
        self.drifting_s = 0.0
        self.interventions = 0
        self.frames = 0
        self._last = np.zeros(2)

    def reset(self, layout: Layout) -> None:
        """A new episode."""
        self.layout = layout
        self.active, self.since, self.drifting_s = False, 0.0, 0.0
        self.interventions = self.frames = 0
        self._last = np.zeros(2)

    def danger(self, pose: np.ndarray) -> bool:
        assert self.layout is not None
        front, back, _ = _plan_targets(self.layout)
        near_boxes = front - 0.25 <= pose[0] <= back
        wrong_side = near_boxes and pose[1] * self.layout.side < 0.02
        return wrong_side or box_clearance(self.layout, pose) < self.settings.clearance

    def command(self, pose: np.ndarray, policy: np.ndarray | None, t: float) -> np.ndarray | None:
        """Called once per camera frame at sim time ``t``: the operator's command while they have the robot, None
        while the policy drives. ``policy``: the policy's newest command (None: it sent none lately)."""
        assert self.layout is not None, "reset first"
        s = self.settings
        want = recovery_action(self.layout, pose)
        if self.active:
            if t - self.since >= s.hold_s and not self.danger(pose):
                self.active, self.drifting_s = False, 0.0
                return None
            return self._send(want)
        drifting = policy is not None and float(np.max(np.abs(np.asarray(policy)[:2] - want))) > s.drift
        self.drifting_s = self.drifting_s + self.dt if drifting else 0.0
        if self.danger(pose) or self.drifting_s >= s.drift_s:
            self.active, self.since = True, t
            self.interventions += 1
            self._last = np.asarray(policy if policy is not None else np.zeros(2), np.float64)[:2]
            return self._send(want)
        return None

    def _send(self, want: np.ndarray) -> np.ndarray:
        """Within the node's limits: per-field velocity, and acceleration from the last command."""
        s = self.settings
        cmd = np.clip(want, -s.max_velocity, s.max_velocity)
        step = s.max_accel * self.dt
        cmd = np.clip(cmd, self._last - step, self._last + step)
        self._last = cmd
        self.frames += 1
        return cmd
