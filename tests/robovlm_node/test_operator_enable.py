"""OperatorEnable on a fake clock (no ROS): every configured source must grant, a silent source revokes, a grant
edge starts a fresh plan once, and diagnostics can say which source did what. The node process is tested over DDS
in test_node_operator.py."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from robovlm.runtime.safety import HOLD_CAUSES
from robovlm_node.operator_enable import HOLD_CAUSE, OperatorEnable
from robovlm_node.status import NodeStatus


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def _enable(clock: Clock, *, joy: bool = False, required: bool = True) -> tuple[OperatorEnable, list[float]]:
    grants: list[float] = []
    status = NodeStatus(logging.getLogger("robovlm.test"))
    e = OperatorEnable(
        required=required,
        timeout_s=0.5,
        heartbeat_topic="/robovlm/enable",
        joy_topic="/joy" if joy else "",
        joy_button=4,
        clock=clock,
        status=status,
        on_grant=lambda: grants.append(clock()),
    )
    return e, grants


def test_the_heartbeat_grants_while_true_and_fresh_and_each_grant_starts_a_fresh_plan_once():
    clock = Clock()
    e, grants = _enable(clock)
    assert HOLD_CAUSE in HOLD_CAUSES
    assert e.hold_cause() == HOLD_CAUSE and "no heartbeat on /robovlm/enable" in e.snapshot().reason
    e.on_heartbeat(True)
    assert e.hold_cause() is None and grants == [100.0]
    clock.t += 0.4
    assert e.hold_cause() is None and grants == [100.0], "a held grant is one grant"
    clock.t += 0.2  # 0.6 s since the last heartbeat: revoked, as a dead publisher is
    assert e.hold_cause() == HOLD_CAUSE
    assert "silent for 0.60 s (> 0.5 s)" in e.snapshot().reason
    e.on_heartbeat(False)
    assert e.hold_cause() == HOLD_CAUSE and "heartbeat /robovlm/enable is false" in e.snapshot().reason
    e.on_heartbeat(True)
    assert e.hold_cause() is None and grants == pytest.approx([100.0, 100.6])
    snap = e.snapshot()
    assert snap.granted and snap.grants == 2 and snap.revocations == 1 and snap.changed_at == pytest.approx(100.6)


def test_with_a_deadman_both_must_grant_and_a_silent_joystick_is_a_released_button():
    clock = Clock()
    e, grants = _enable(clock, joy=True)
    e.on_heartbeat(True)
    assert e.hold_cause() == HOLD_CAUSE and e.snapshot().reason == "no Joy on /joy"
    e.on_joy([0, 0, 0, 0, 1, 0])
    assert e.hold_cause() is None and len(grants) == 1
    assert e.snapshot().sources == "heartbeat /robovlm/enable and deadman button 4 of /joy"
    e.on_joy([0, 0, 0, 0, 0, 0])
    assert e.hold_cause() == HOLD_CAUSE and e.snapshot().reason == "deadman button 4 of /joy released"
    e.on_joy([0, 0, 0, 0, 1, 0])
    assert e.hold_cause() is None and len(grants) == 2
    clock.t += 0.3
    e.on_heartbeat(True)
    clock.t += 0.3  # the heartbeat is fresh, the Joy message 0.6 s old: the driver died with the button held
    assert e.hold_cause() == HOLD_CAUSE and "Joy /joy silent for 0.60 s" in e.snapshot().reason
    e.on_heartbeat(False)
    assert e.hold_cause() == HOLD_CAUSE
    assert e.snapshot().reason.startswith("heartbeat /robovlm/enable is false; Joy /joy silent")


def test_a_joystick_without_the_button_never_grants_and_is_counted():
    clock = Clock()
    e, grants = _enable(clock, joy=True)
    e.on_heartbeat(True)
    e.on_joy([1, 1])  # a two-button device: button 4 does not exist
    assert e.hold_cause() == HOLD_CAUSE and grants == []
    assert e.status.snapshot().faults.get("enable_joy_button_missing") == 1


def test_not_required_never_holds_and_a_reset_makes_the_next_grant_a_new_one():
    clock = Clock()
    e, grants = _enable(clock, required=False)
    assert e.hold_cause() is None and grants == [] and e.snapshot().granted
    e, grants = _enable(clock)
    e.on_heartbeat(True)
    assert e.hold_cause() is None and len(grants) == 1
    e.reset()  # activate again with the operator still granting: the plan starts fresh all the same
    assert e.hold_cause() is None and len(grants) == 2


@pytest.mark.parametrize("disabled_output,published", [("zero", 5), ("silent", 1)])
def test_disabled_output_silent_sends_one_zero_then_nothing(disabled_output, published):
    """The control loop held by ``not_enabled`` for five ticks: zeros every tick, or the first zero only."""
    from robovlm.runtime.safety import SafetyFilter, SafetyLimits
    from robovlm.runtime.scheduler import ChunkScheduler
    from robovlm_node.control import ControlLoop

    class Output:
        def __init__(self) -> None:
            self.sent: list = []

        def is_open(self) -> bool:
            return True

        def publish(self, command, stamp_ns: int) -> bool:
            self.sent.append(command)
            return True

        def publish_zero(self) -> None:
            self.sent.append(0)

    class Inputs:
        def ages(self, now):
            return {"head": 0.0}

        def missing(self, now):
            return []

    clock = Clock()
    e, _ = _enable(clock)
    out = Output()
    loop = ControlLoop(
        rate_hz=20.0,
        input_timeout_s=0.5,
        rt_priority=0,
        clock=type("C", (), {"now_ns": lambda self: int(clock.t * 1e9)})(),
        scheduler=ChunkScheduler("latest", chunk_timeout_s=1.0),
        safety=SafetyFilter(SafetyLimits(max_velocity=[0.3], max_accel=[1.0])),
        inputs=Inputs(),
        holds=[e],
        output=out,
        status=e.status,
        silent_causes=(HOLD_CAUSE,) if disabled_output == "silent" else (),
    )
    for _ in range(5):
        loop.tick()
        clock.t += 0.05
    assert len(out.sent) == published and all(float(c[0]) == 0.0 for c in out.sent)


def test_a_joystick_topic_without_its_button_fails_configure_naming_both():
    from robovlm_node.parameters import PARAMETERS, ParameterError, validate_settings

    raw = {k: spec.default for k, spec in PARAMETERS.items()} | {"model_path": "/ckpt", "enable_joy_topic": "/joy"}
    with pytest.raises(ParameterError, match="'enable_joy_topic' is set but 'enable_joy_button' is not"):
        validate_settings(raw)
    with pytest.raises(ParameterError, match="'enable_topic' is not a valid ROS topic name"):
        validate_settings(raw | {"enable_joy_button": 5, "enable_topic": "bad topic"})
    assert validate_settings(raw | {"enable_joy_button": 5}).enable_joy_button == 5


def test_the_tick_that_finds_a_grant_never_commands_a_chunk_planned_before_it():
    """The grant is found in the tick's hold check, which resets the plan; the action is read after it, so the
    chunk planned while motion was not granted is never commanded, not even for that one tick."""
    from robovlm.runtime.safety import SafetyFilter, SafetyLimits
    from robovlm.runtime.scheduler import ActionChunk, ChunkScheduler
    from robovlm_node.control import ControlLoop

    clock = Clock()
    scheduler = ChunkScheduler("latest", chunk_timeout_s=1.0)
    grants: list[float] = []
    status = NodeStatus(logging.getLogger("robovlm.test"))
    enable = OperatorEnable(
        required=True,
        timeout_s=0.5,
        heartbeat_topic="/robovlm/enable",
        joy_topic="",
        joy_button=-1,
        clock=clock,
        status=status,
        on_grant=lambda: (grants.append(clock()), scheduler.reset()),
    )
    sent: list = []

    class Output:
        def is_open(self) -> bool:
            return True

        def publish(self, command, stamp_ns: int) -> bool:
            sent.append(command)
            return True

        def publish_zero(self) -> None:
            sent.append(None)

    class Inputs:
        def ages(self, now):
            return {"head": 0.0}

        def missing(self, now):
            return []

    loop = ControlLoop(
        rate_hz=20.0,
        input_timeout_s=0.5,
        rt_priority=0,
        clock=type("C", (), {"now_ns": lambda self: int(clock.t * 1e9)})(),
        scheduler=scheduler,
        safety=SafetyFilter(SafetyLimits(max_velocity=[0.3], max_accel=[10.0])),
        inputs=Inputs(),
        holds=[enable],
        output=Output(),
        status=status,
    )
    planned = ActionChunk(stamp=clock.t, dt=0.05, actions=np.full((10, 1), 0.3))
    assert scheduler.push(planned)  # planned while motion is not granted
    loop.tick()
    enable.on_heartbeat(True)
    clock.t += 0.05
    loop.tick()  # the grant is found here
    assert grants and all(float(np.abs(c).max()) == 0.0 for c in sent), sent
