"""The operator's takeover in the control loop (fake clock, no ROS): by joystick button or by command, forwarded
within the limits or left to the mux, edges reported once; and the recorder's write failure (a full disk), which
ends recording and never reaches the caller."""

from __future__ import annotations

import errno
import logging

import numpy as np

from robovlm.data.rollout import RolloutBag
from robovlm_node.recorder import RolloutRecorder
from robovlm_node.status import NodeStatus
from robovlm_node.takeover import CAUSE, Takeover
from tests.robovlm_node.test_parts import FakeClock, head_frame, make_parts, plan


def _takeover(parts, *, joy_button: int = -1, forward: bool = False, timeout_s: float = 0.3):
    edges: list[tuple[str, float]] = []
    t = Takeover(
        shadow=False,
        timeout_s=timeout_s,
        operator_topic="/teleop",
        joy_topic="/joy",
        joy_button=joy_button,
        forward=forward,
        clock=parts.clock.now,
        status=parts.status,
        on_start=lambda now: edges.append(("start", now)),
        on_end=lambda now: edges.append(("end", now)),
    )
    parts.control._takeover = t
    return t, edges


def _driving(parts) -> None:
    parts.inputs.on_camera("head", head_frame(parts.clock))
    parts.inputs.camera_frames({"head": parts.inputs.latest().head})
    plan(parts)


def test_an_operator_command_takes_over_the_node_publishes_nothing_and_the_release_is_one_edge():
    parts = make_parts(sleeps=0, max_accel=[1.0, 1.0])
    takeover, edges = _takeover(parts)
    _driving(parts)
    parts.control.tick()
    assert len(parts.published) == 1 and parts.published[-1].twist.linear.x > 0
    takeover.on_operator(np.array([-0.2, 0.0]))  # zeros or not: a fresh command is a takeover
    for _ in range(3):
        parts.control.tick()
    assert len(parts.published) == 1, "the node published while the operator had the robot"
    assert [e for e, _ in edges] == ["start"] and parts.status.snapshot().last_cause == CAUSE
    parts.clock.t_ns += int(0.31e9)  # the operator's command goes stale: released
    _driving(parts)
    parts.control.tick()
    assert [e for e, _ in edges] == ["start", "end"]
    assert len(parts.published) == 2
    # the filter followed the operator (-0.2): the policy's first command is limited from there (1 m/s^2 over
    # 0.31 s), not from the policy's last command before the takeover (0.3)
    assert parts.published[-1].twist.linear.x <= -0.2 + 0.31 + 1e-9


def test_a_forwarded_takeover_publishes_the_operators_command_within_the_limits():
    parts = make_parts(sleeps=0)
    takeover, _ = _takeover(parts, forward=True)
    takeover.on_operator(np.array([5.0, 0.0]))  # far over max_velocity
    parts.control.tick()
    parts.clock.t_ns += int(0.05e9)
    parts.control.tick()
    xs = [m.twist.linear.x for m in parts.published]
    vmax = parts.control.safety.limits.max_velocity[0]
    assert len(xs) == 2 and 0 < xs[0] <= vmax and xs[1] <= vmax


def test_a_joystick_takeover_follows_its_button_not_the_teleop_stream():
    parts = make_parts(sleeps=0)
    takeover, edges = _takeover(parts, joy_button=5)
    _driving(parts)
    takeover.on_operator(np.zeros(2))  # teleop's stream alone is not a takeover with a button configured
    parts.control.tick()
    assert not edges and len(parts.published) == 1
    takeover.on_joy([0] * 5 + [1])
    parts.control.tick()
    assert [e for e, _ in edges] == ["start"] and len(parts.published) == 1
    takeover.on_joy([0] * 6)
    parts.control.tick()
    assert [e for e, _ in edges] == ["start", "end"]


def test_a_failed_write_ends_recording_with_its_reason_and_the_callers_go_on(tmp_path, monkeypatch):
    clock = FakeClock(sleeps=0)
    status = NodeStatus(logging.getLogger("robovlm.test"))

    def full_disk(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(RolloutBag, "policy_command", full_disk)
    monkeypatch.setattr(RolloutBag, "command", full_disk)
    rec = RolloutRecorder(
        directory=tmp_path / "rec",
        max_bytes=10**9,
        full_frames=False,
        image_size=32,
        fields=["linear.x", "linear.y"],
        info={"node": "robovlm", "mode": "drive", "model": "m"},
        clock_ns=clock.now_ns,
        status=status,
        instruction=lambda: "go",
        takeover=None,
    )
    rec.start_episode()
    for _ in range(5):
        rec.observe(np.array([0.1, 0.0]), None, clock.now())  # never raises on the caller's thread
    rec.close()
    snap = rec.snapshot()
    assert "No space left" in snap.stopped and not snap.recording, snap
    rec.observe(np.array([0.1, 0.0]), None, clock.now())  # after the stop: ignored, no error


def test_a_new_instruction_during_an_intervention_starts_an_episode_inside_it(tmp_path):
    from robovlm.data.dataset import is_bag

    clock = FakeClock(sleeps=0)
    said = ["go around the box on the left"]
    rec = RolloutRecorder(
        directory=tmp_path / "rec",
        max_bytes=10**9,
        full_frames=False,
        image_size=32,
        fields=["linear.x", "linear.y"],
        info={"node": "robovlm", "mode": "drive", "model": "m"},
        clock_ns=clock.now_ns,
        status=NodeStatus(logging.getLogger("robovlm.test")),
        instruction=lambda: said[0],
        takeover=None,
    )
    rec.start_episode()
    rec.intervention(True, clock.now())
    rec.observe(np.array([0.1, 0.0]), CAUSE, clock.now())
    said[0] = "go around the box on the right"  # the operator still drives
    clock.t_ns += 10**8
    rec.observe(np.array([0.1, 0.0]), CAUSE, clock.now())
    rec.close()
    bags = sorted(p for p in (tmp_path / "rec").iterdir() if is_bag(p))
    assert len(bags) == 2
    from robovlm.data.bag import deserialize, iter_bag
    from robovlm.data.rollout import TOPICS

    marks = [deserialize(m).data for m in iter_bag(bags[1], {TOPICS["intervention"]})]
    assert marks == [True], "the second episode must know the operator has the robot"


def test_in_shadow_mode_nothing_is_a_takeover_and_the_operators_commands_are_the_recorded_demonstration(tmp_path):
    from robovlm.data.bag import deserialize, iter_bag
    from robovlm.data.dataset import is_bag
    from robovlm.data.rollout import TOPICS

    parts = make_parts(sleeps=0)
    shadow, edges = _takeover(parts)
    shadow.shadow = True
    shadow.on_operator(np.array([0.2, -0.1]))
    assert not shadow.active(parts.clock.now()) and not edges  # the operator drives; the node publishes nothing
    rec = RolloutRecorder(
        directory=tmp_path / "rec",
        max_bytes=10**9,
        full_frames=False,
        image_size=32,
        fields=["linear.x", "linear.y"],
        info={"node": "robovlm", "mode": "shadow", "model": "m"},
        clock_ns=parts.clock.now_ns,
        status=parts.status,
        instruction=lambda: "go",
        takeover=shadow,
    )
    rec.start_episode()
    rec.observe(np.array([0.3, 0.0]), None, parts.clock.now())  # the policy's shadow command
    rec.close()
    bag = next(p for p in (tmp_path / "rec").iterdir() if is_bag(p))
    got = {m.topic: deserialize(m) for m in iter_bag(bag)}
    assert got[TOPICS["source"]].data == "operator"
    assert (got[TOPICS["cmd_vel"]].twist.linear.x, got[TOPICS["cmd_vel"]].twist.linear.y) == (0.2, -0.1)
    assert got[TOPICS["policy_cmd"]].twist.linear.x == 0.3
