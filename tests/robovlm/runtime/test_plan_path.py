"""Chunks and published commands integrated into the paths ``~/plan`` and ``~/executed`` show, and the picture
``~/debug_image`` draws of them."""

from __future__ import annotations

import math

import numpy as np
import pytest

from robovlm.runtime.plan_overlay import BAND, PANEL, PLAN, draw_overlay
from robovlm.runtime.plan_path import chunk_path, integrate, planar_velocities, trail_path
from robovlm.runtime.scheduler import ActionChunk, ChunkScheduler


def _euler(velocities: np.ndarray, dt: float, substeps: int = 2000) -> np.ndarray:
    """The same motion by brute force: many tiny straight steps, each at its mid-step heading (the exact arcs must
    agree with it)."""
    pose = np.zeros(3)
    out = [pose.copy()]
    h = dt / substeps
    for vx, vy, wz in velocities:
        for _ in range(substeps):
            c, s = math.cos(pose[2] + wz * h / 2), math.sin(pose[2] + wz * h / 2)
            pose = pose + h * np.array([c * vx - s * vy, s * vx + c * vy, wz])
        out.append(pose.copy())
    return np.array(out)


def test_straight_and_lateral_chunks_are_sums_of_their_steps():
    actions = np.array([[0.2, 0.0], [0.3, -0.1], [0.1, 0.05]], np.float32)  # (N, 2): linear.x, linear.y
    poses = chunk_path(actions, ["linear.x", "linear.y"], 0.1)
    assert poses.shape == (4, 3) and np.allclose(poses[0], 0)
    assert np.allclose(np.diff(poses[:, :2], axis=0), actions * 0.1, atol=1e-7)
    assert np.allclose(poses[:, 2], 0)


def test_turning_chunks_follow_the_arc_the_base_drives():
    rng = np.random.default_rng(0)
    v = np.column_stack([rng.uniform(-0.5, 0.5, 8), rng.uniform(-0.3, 0.3, 8), rng.uniform(-2, 2, 8)])
    assert np.allclose(integrate(v, 0.25), _euler(v, 0.25), atol=1e-8)
    # a full turn at constant speed closes the circle of radius v / w
    circle = integrate(np.tile([[0.5, 0.0, math.pi]], (4, 1)), 0.5)
    assert np.allclose(circle[-1, :2], 0, atol=1e-12) and np.isclose(abs(circle[2, 1]), 2 * 0.5 / math.pi)


def test_fields_that_are_not_planar_are_left_out_and_a_wrong_width_is_refused():
    v = planar_velocities(np.array([[1.0, 2.0, 3.0]]), ["linear.z", "angular.z", "linear.x"])
    assert v.tolist() == [[3.0, 0.0, 2.0]]
    with pytest.raises(ValueError, match="2 action components for 3 fields"):
        planar_velocities(np.zeros((4, 2)), ["linear.x", "linear.y", "angular.z"])


def test_the_executed_trail_ends_at_the_robot_and_lies_behind_it():
    times = np.arange(10) * 0.1  # 1 s of 0.4 m/s forward
    poses = trail_path(times, np.tile([[0.4, 0.0]], (10, 1)), ["linear.x", "linear.y"], now=1.0)
    assert np.allclose(poses[-1], 0) and np.allclose(poses[0], [-0.4, 0.0, 0.0])
    # turning left while driving: the start lies behind and to the left (the arc curves around the centre on the left)
    turn = trail_path(times, np.tile([[0.4, 0.0, 1.0]], (10, 1)), ["linear.x", "linear.y", "angular.z"], now=1.0)
    assert np.allclose(turn[-1], 0) and turn[0, 0] < 0 and turn[0, 1] > 0 and np.isclose(turn[0, 2], -1.0)
    assert trail_path([], np.zeros((0, 2)), ["linear.x", "linear.y"], now=1.0).shape == (0, 3)


@pytest.mark.parametrize("mode", ["latest", "ensemble", "blend", "open_loop"])
def test_the_scheduler_plans_from_now_on(mode):
    sched = ChunkScheduler(mode, chunk_timeout_s=1.0)
    first = ActionChunk(10.0, 0.1, np.arange(20, dtype=np.float32).reshape(10, 2))
    sched.push(first)
    assert sched.action_at(10.0) is not None  # open_loop: the first chunk becomes the current one
    sched.push(ActionChunk(10.2, 0.1, -np.arange(20, dtype=np.float32).reshape(10, 2)))
    plan = sched.plan(10.35)
    assert plan is not None
    followed, i = (first, 3) if mode == "open_loop" else (sched._chunks[-1], 1)
    assert np.isclose(plan.stamp, followed.stamp + i * 0.1) and np.array_equal(plan.actions, followed.actions[i:])
    assert sched.plan(11.3) is None  # the newest chunk is older than chunk_timeout_s
    sched.reset()
    assert sched.plan(10.35) is None


def test_the_debug_picture_shows_the_frame_the_plan_and_the_cause():
    frame = np.full((56, 56, 3), 128, np.uint8)
    plan = chunk_path(np.tile([[0.3, 0.1]], (10, 1)), ["linear.x", "linear.y"], 0.1)
    pic = draw_overlay(frame, plan, np.zeros((0, 3)), instruction="go to the cup " * 20, hold_cause="not_enabled")
    assert pic.shape == (PANEL + BAND, 2 * PANEL, 3) and pic.dtype == np.uint8
    assert np.all(pic[:PANEL, :PANEL] == 128)  # the frame, scaled up
    view = pic[:PANEL, PANEL:]
    assert np.any(np.all(view == PLAN, axis=-1))  # the plan is drawn
    ahead = np.all(view[: PANEL // 2] == PLAN, axis=-1).sum()  # forward is up (the legend is in the last 20 rows)
    assert ahead > 10 * np.all(view[PANEL // 2 : PANEL - 20] == PLAN, axis=-1).sum()
    assert np.any(pic[PANEL:, :, 0] > 200)  # the red hold cause in the text band
    none = draw_overlay(None, np.zeros((0, 3)), np.zeros((0, 3)), instruction="", hold_cause=None)
    assert none.shape == pic.shape
