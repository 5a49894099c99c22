"""``require_enable`` black-box: the node as a process over DDS, an operator station publishing the heartbeat and a
joystick's deadman as real ones do. Commands are TwistStamped, timed by the node's own stamps; the operator's
messages by the stamps of the same (system) clock, so "stopped within ``enable_timeout_s`` plus one period" is
measured between the two, with 0.1 s for the message to cross DDS on a loaded machine."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

import numpy as np
import pytest
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Joy
from std_msgs.msg import Bool

from tests.ros_harness import AMAX, RATE, VMAX, node_command

pytestmark = pytest.mark.dds
TIMEOUT_S = 0.5
DELIVERY_S = 0.1
PERIOD_S = 1.0 / RATE


class Operator:
    """Publishes the heartbeat (and the deadman's Joy) at 20 Hz while told to; remembers its last message's time.

    ``send`` changes what it publishes and returns when the change went out, with the time it did: a bound measured
    from the moment a test set the value would count a stall of the test process before the publish (CI's machine
    has them) against the node."""

    def __init__(self, h, name: str, *, joy: bool) -> None:
        self.h = h
        reliable = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
        self.heartbeat_pub = h.peer.create_publisher(Bool, f"/{name}/enable", reliable)
        self.joy_pub = h.peer.create_publisher(Joy, "/joy_op", 10) if joy else None
        self.heartbeat: bool | None = None  # None: silent
        self.button = 0
        self.last_heartbeat = 0.0  # seconds on the peer's clock
        self.last_joy = 0.0
        self._changed = threading.Condition()
        self._generation = 0  # of the values above; a change counts up
        self._sent: tuple[int, float] = (0, 0.0)  # the generation last published, and when
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def now(self) -> float:
        return self.h.peer.get_clock().now().nanoseconds * 1e-9

    def send(self, **values: bool | int | None) -> float:
        """Set ``heartbeat`` and/or ``button``; the peer-clock time the publish that carries them began."""
        with self._changed:
            for key, value in values.items():
                setattr(self, key, value)
            self._generation += 1
            wanted = self._generation
            assert self._changed.wait_for(lambda: self._sent[0] >= wanted, timeout=5.0), "the operator never sent"
            return self._sent[1]

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            with self._changed:
                generation, heartbeat, button = self._generation, self.heartbeat, self.button
            t = self.now()
            if heartbeat is not None:
                self.heartbeat_pub.publish(Bool(data=heartbeat))
                self.last_heartbeat = self.now()
            if self.joy_pub is not None:
                msg = Joy(axes=[0.0] * 6, buttons=[0, 0, 0, 0, button, 0, 0, 0])
                msg.header.stamp = self.h.stamp()
                self.joy_pub.publish(msg)
                self.last_joy = self.now()
            with self._changed:
                self._sent = (generation, t)
                self._changed.notify_all()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def _start(checkpoint: str, name: str, *extra: str) -> subprocess.Popen:
    params = [f"model_path:={checkpoint}", "autostart:=true", "instruction:=go to the cup", "stamped:=true"]
    params += [f"max_velocity:=[{VMAX}]", f"max_accel:=[{AMAX}]", f"control_rate_hz:={RATE}", "require_enable:=true"]
    params += [f"enable_timeout_s:={TIMEOUT_S}", *extra]
    return subprocess.Popen(
        node_command(*params, name=name),
        env=os.environ.copy(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _moving(h, since: float) -> bool:
    return any(np.any(v != 0) for _, v in h.commands(since=since))


def _last_moving(h, since: float) -> float:
    return max((t for t, v in h.commands(since=since) if np.any(v != 0)), default=since)


def _operator_status(h, name: str) -> str:
    for msg in reversed(h.rec.diagnostics):
        for st in msg.status:
            if st.name == f"{name}: operator":
                return st.message
    return ""


def test_the_heartbeat_and_the_deadman_grant_motion_and_either_revokes_it(checkpoint, harness_factory):
    name = "robovlm_op"
    h = harness_factory({"model_path": checkpoint, "stamped": True})  # the peer; its own node stays unconfigured
    op = Operator(h, name, joy=True)
    proc = _start(checkpoint, name, "enable_joy_topic:=/joy_op", "enable_joy_button:=4")
    try:
        h.start_feeding()
        assert h.wait_for(lambda: len(h.commands()) >= 20, 90), "the node never published its held zeros"
        assert not _moving(h, 0.0), "moved without a grant"
        t0 = op.send(heartbeat=True)  # the heartbeat alone: the deadman is not held
        assert not h.wait_for(lambda: _moving(h, t0), 1.5), "moved with the deadman released"
        # the reason, once the operator's messages flow (a stall of this process reads "silent for" meanwhile)
        released = "deadman button 4 of /joy_op released"
        assert h.wait_for(lambda: released in _operator_status(h, name), 5), _operator_status(h, name)
        t_grant = op.send(button=1)
        assert h.wait_for(lambda: _moving(h, t_grant), 30), "no motion after the grant"
        first = next(v for t, v in h.commands(since=t_grant) if np.any(v != 0))
        assert np.abs(first).max() <= AMAX * 2 * PERIOD_S, f"a grant must ramp up from zero: {first}"

        t_release = op.send(button=0)  # deadman released
        time.sleep(1.0)
        assert _last_moving(h, t_release) <= t_release + PERIOD_S + DELIVERY_S, "still moving after the release"
        assert h.wait_for(lambda: len(h.commands(since=t_release + 0.3)) >= 10, 5), "held zeros must keep coming"

        t_again = op.send(button=1)  # granted again: a fresh plan, ramped from zero
        assert h.wait_for(lambda: _moving(h, t_again), 30), "no motion after the second grant"
        first = next(v for t, v in h.commands(since=t_again) if np.any(v != 0))
        assert np.abs(first).max() <= AMAX * 2 * PERIOD_S, first

        op.heartbeat = None  # the operator station dies: its heartbeat stops, the button still held
        time.sleep(1.5)
        t_last = op.last_heartbeat
        assert _last_moving(h, t_last) <= t_last + TIMEOUT_S + PERIOD_S + DELIVERY_S, "moving on a dead heartbeat"
        assert h.wait_for(lambda: "silent for" in _operator_status(h, name), 5), _operator_status(h, name)
    finally:
        op.close()
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "motion granted by heartbeat" in out and "motion revoked: deadman button 4 of /joy_op released" in out, out


def test_disabled_output_silent_publishes_one_zero_on_revocation_and_the_final_zero(checkpoint, harness_factory):
    name = "robovlm_silent"
    h = harness_factory({"model_path": checkpoint, "stamped": True})
    op = Operator(h, name, joy=False)
    proc = _start(checkpoint, name, "disabled_output:=silent")
    try:
        h.start_feeding()
        assert "active" in _wait_line(proc, "active: publishing commands"), "the node did not activate"
        time.sleep(1.0)
        assert len(h.commands()) <= 1 and not _moving(h, 0.0), "a node without a grant must be (nearly) silent"
        t_grant = op.send(heartbeat=True)
        assert h.wait_for(lambda: _moving(h, t_grant), 30), "no motion after the grant"
        t_revoke = op.send(heartbeat=False)
        time.sleep(1.5)
        after = h.commands(since=t_revoke + PERIOD_S + DELIVERY_S)
        assert len(after) <= 1 and all(np.all(v == 0) for _, v in after), after  # one zero, then nothing
        assert any(np.all(v == 0) for _, v in h.commands(since=t_revoke)), "the revocation's zero is missing"
        n = len(h.commands())
    finally:
        op.close()
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert h.wait_for(lambda: len(h.commands()) > n, 5), "no final zero on shutdown"
    assert np.all(h.commands()[-1][1] == 0)


def _wait_line(proc: subprocess.Popen, needle: str, timeout_s: float = 90.0) -> str:
    """Read the process's output until a line with ``needle`` (the rest stays in the pipe for communicate)."""
    end = time.monotonic() + timeout_s
    assert proc.stdout is not None
    while time.monotonic() < end:
        line = proc.stdout.readline()
        if needle in line:
            return line
        if not line and proc.poll() is not None:
            break
    return ""
