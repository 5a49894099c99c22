"""``~/plan``, ``~/executed`` and ``~/debug_image`` black-box: the node as a process over DDS, a viewer (rviz2's
place) subscribing to them. ``~/plan`` must be the integral of the chunk the robot follows: in ``open_loop`` chunk
mode with limits too wide to change any action, every command the node publishes while a plan is due is that
plan's velocity for the step, recovered from consecutive poses."""

from __future__ import annotations

import os
import signal
import subprocess
import threading

import numpy as np
import pytest
from nav_msgs.msg import Path
from sensor_msgs.msg import Image

from robovlm.runtime.plan_overlay import BAND, PANEL
from tests.ros_harness import RATE, node_command

pytestmark = pytest.mark.dds
NAME = "robovlm_plan"
EPS_S = 0.002  # a command this close to a step boundary is not attributed to either step


def _secs(stamp) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


class Viewer:
    """Subscribes to the node's three visualization topics and keeps what arrives."""

    def __init__(self, h) -> None:
        self.lock = threading.Lock()
        self.got: dict[str, list] = {"plan": [], "executed": [], "debug_image": []}
        for topic, kind in (("plan", Path), ("executed", Path), ("debug_image", Image)):
            h.peer.create_subscription(kind, f"/{NAME}/{topic}", lambda m, t=topic: self._add(t, m), 10)

    def _add(self, topic: str, msg) -> None:
        with self.lock:
            self.got[topic].append(msg)

    def plans(self) -> list[Path]:
        with self.lock:
            return [m for m in self.got["plan"] if len(m.poses) >= 3]


def _steps(plan: Path) -> list[tuple[float, float, np.ndarray]]:
    """(start, end, velocity) of each step of a plan: the displacement between two poses over their time."""
    t = np.array([_secs(p.header.stamp) for p in plan.poses])
    xy = np.array([[p.pose.position.x, p.pose.position.y] for p in plan.poses])
    return [(t[k], t[k + 1], (xy[k + 1] - xy[k]) / (t[k + 1] - t[k])) for k in range(len(t) - 1)]


def test_the_plan_is_the_integral_of_the_chunk_the_robot_follows(checkpoint, harness_factory):
    h = harness_factory({"model_path": checkpoint, "stamped": True})  # the peer; its own node stays unconfigured
    viewer = Viewer(h)
    params = [f"model_path:={checkpoint}", "autostart:=true", "instruction:=go to the cup", "stamped:=true"]
    params += ["chunk_mode:=open_loop", "max_velocity:=[10.0]", "max_accel:=[1000.0]", f"control_rate_hz:={RATE}"]
    params += ["visualization_rate_hz:=10.0"]
    proc = subprocess.Popen(
        node_command(*params, name=NAME), env=os.environ.copy(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        h.start_feeding()
        assert h.wait_for(lambda: any(np.any(v != 0) for _, v in h.commands()), 90), "the node never drove"
        assert h.wait_for(lambda: len(viewer.plans()) >= 8 and viewer.got["debug_image"], 30), viewer.got.keys()
        last_plan_end = _secs(viewer.plans()[-1].poses[-1].header.stamp)
        assert h.wait_for(lambda: h.commands() and h.commands()[-1][0] > last_plan_end, 30)
        commands = h.commands()
        compared, moving = 0, 0
        for plan in viewer.plans():
            assert plan.header.frame_id == "base_link"
            first = plan.poses[0]
            assert (first.pose.position.x, first.pose.position.y) == (0.0, 0.0), "a plan starts at the robot"
            assert first.header.stamp == plan.header.stamp, "... now"
            for start, end, velocity in _steps(plan):
                for t, command in commands:
                    if start + EPS_S <= t < end - EPS_S:
                        # the velocity is recovered from stamps held as float64 seconds since the epoch, which
                        # resolve 2.4e-7 s: a few of those over the step's length is a relative error (1.3e-5 on a
                        # 50 ms step), the same for every field; a command from another action differs by far more
                        rtol = 8 * np.spacing(end) / (end - start)
                        assert np.allclose(command, velocity, rtol=rtol, atol=1e-5), (t - start, command, velocity)
                        compared += 1
                        moving += bool(np.any(command != 0))
        assert compared >= 20 and moving >= 10, (compared, moving)

        executed = viewer.got["executed"][-1]
        end = executed.poses[-1].pose.position
        assert executed.header.frame_id == "base_link" and abs(end.x) < 1e-9 and abs(end.y) < 1e-9
        assert len(executed.poses) > RATE  # a second and more of commands
        image = viewer.got["debug_image"][-1]
        assert (image.height, image.width, image.encoding) == (PANEL + BAND, 2 * PANEL, "rgb8")
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
