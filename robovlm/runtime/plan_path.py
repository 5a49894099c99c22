"""Velocity commands integrated into planar paths: what the node shows on ``~/plan`` and ``~/executed``.

A chunk of velocity actions in the robot's frame (``linear.x`` forward, ``linear.y`` left, ``angular.z``
counter-clockwise; any field missing is zero) is integrated over its time step from the robot's pose now, the
origin: the path the policy intends if its commands are followed exactly. The commands actually published are
integrated over the last seconds and expressed in the frame of the robot's pose now, so the trail ends at the
origin. Both are dead reckoning, which is what a plan is; odometry would tell where the robot really went.

Integration is exact for a constant command over a step: a unicycle arc (or a straight line when ``angular.z`` is
zero), so a turning chunk draws the arc the base drives, not a polygon that drifts with the step length.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

PLANAR_FIELDS = ("linear.x", "linear.y", "angular.z")


def planar_velocities(actions: np.ndarray, fields: Sequence[str]) -> np.ndarray:
    """(N, A) actions of ``fields`` -> (N, 3) ``vx, vy, wz``; fields that are not planar are left out."""
    actions = np.asarray(actions, dtype=np.float64).reshape(len(actions), -1)  # (N, A)
    if actions.shape[1] != len(fields):
        raise ValueError(f"{actions.shape[1]} action components for {len(fields)} fields {list(fields)}")
    out = np.zeros((len(actions), 3))  # (N, 3)
    for j, name in enumerate(PLANAR_FIELDS):
        if name in fields:
            out[:, j] = actions[:, list(fields).index(name)]
    return out


def step_pose(pose: np.ndarray, velocity: np.ndarray, dt: float) -> np.ndarray:
    """``pose`` (x, y, yaw) after driving ``velocity`` (vx, vy, wz, in the robot's frame) for ``dt`` seconds."""
    x, y, yaw = pose
    vx, vy, wz = velocity
    dtheta = wz * dt
    if abs(dtheta) < 1e-9:  # straight: the limit of the arc below
        a, b = dt, 0.0
    else:  # the body-frame displacement of a constant twist: integral of R(wz t) dt over [0, dt]
        a, b = math.sin(dtheta) / wz, (1.0 - math.cos(dtheta)) / wz
    dx_body, dy_body = a * vx - b * vy, b * vx + a * vy
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([x + c * dx_body - s * dy_body, y + s * dx_body + c * dy_body, yaw + dtheta])


def integrate(velocities: np.ndarray, dts: Sequence[float] | np.ndarray | float) -> np.ndarray:
    """(N, 3) velocities, each held for its ``dt`` -> (N + 1, 3) poses from the origin."""
    steps = np.broadcast_to(np.asarray(dts, dtype=np.float64), (len(velocities),))
    poses = np.zeros((len(velocities) + 1, 3))  # (N + 1, 3)
    for i, (v, dt) in enumerate(zip(velocities, steps, strict=True)):
        poses[i + 1] = step_pose(poses[i], v, float(dt))
    return poses


def in_frame_of(poses: np.ndarray, origin: np.ndarray) -> np.ndarray:
    """(N, 3) poses re-expressed in the frame whose pose is ``origin`` (x, y, yaw)."""
    c, s = math.cos(origin[2]), math.sin(origin[2])
    dx, dy = poses[:, 0] - origin[0], poses[:, 1] - origin[1]
    return np.stack([c * dx + s * dy, -s * dx + c * dy, poses[:, 2] - origin[2]], axis=1)


def chunk_path(actions: np.ndarray, fields: Sequence[str], dts: Sequence[float] | np.ndarray | float) -> np.ndarray:
    """(N, A) actions, each held for its ``dt`` -> (N + 1, 3) poses from the robot's pose now (the origin)."""
    return integrate(planar_velocities(actions, fields), dts)


def trail_path(
    times: Sequence[float] | np.ndarray, commands: np.ndarray, fields: Sequence[str], now: float
) -> np.ndarray:
    """Commands published at ``times`` (each held until the next, the last until ``now``) -> the poses the robot
    passed, in the frame of its pose at ``now`` (the last pose is the origin); (N + 1, 3), empty for no commands."""
    if len(times) == 0:
        return np.zeros((0, 3))
    t = np.asarray(times, dtype=np.float64)
    dts = np.diff(np.append(t, max(now, float(t[-1]))))
    poses = integrate(planar_velocities(commands, fields), dts)
    return in_frame_of(poses, poses[-1])
