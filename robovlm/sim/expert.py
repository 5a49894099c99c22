"""Scripted expert: waypoints around the boxes on the instructed side, then to the cup (the demonstrations)."""

from __future__ import annotations

import numpy as np

from .world import BASE_RADIUS, Layout

MAX_SPEED = 0.35
"""m/s, the teleoperators' cruise speed."""


class WaypointExpert:
    def __init__(self, layout: Layout, *, gain: float = 2.0, switch_radius: float = 0.08) -> None:
        self.gain, self.switch_radius = gain, switch_radius
        front = min(b.x - b.half_x for b in layout.boxes)
        back = max(b.x + b.half_x for b in layout.boxes)
        reach = max(abs(b.y) + b.half_y for b in layout.boxes)
        lateral = layout.side * (reach + BASE_RADIUS + 0.15)
        self.waypoints = [
            np.array([front - 0.3, lateral]),
            np.array([back + 0.3, lateral]),
            np.array([layout.cup_x, layout.cup_y]),
        ]
        self.index = 0

    def action(self, pose: np.ndarray) -> np.ndarray:
        """Base-frame [vx, vy] for world pose (x, y, yaw); zero once at the cup."""
        pos = pose[:2]
        while (
            self.index < len(self.waypoints) - 1
            and np.linalg.norm(self.waypoints[self.index] - pos) < self.switch_radius
        ):
            self.index += 1
        err = self.waypoints[self.index] - pos
        if self.index == len(self.waypoints) - 1 and np.linalg.norm(err) < 0.15:
            return np.zeros(2)
        v = self.gain * err
        speed = np.linalg.norm(v)
        if speed > MAX_SPEED:
            v *= MAX_SPEED / speed
        c, s = np.cos(pose[2]), np.sin(pose[2])
        return np.array([c * v[0] + s * v[1], -s * v[0] + c * v[1]])  # world -> base frame
