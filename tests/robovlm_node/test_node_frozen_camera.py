"""``max_frozen_s`` black-box: the node as a process over DDS, cameras that keep publishing the same bytes with fresh
stamps (a driver repeating its last frame). A frozen head camera (required) holds the robot with cause
``frozen_camera`` until its frames change again; a frozen hand camera (not required) leaves the robot driving on the
model's missing-hand marker, as a degenerate one does."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticStatus

from robovlm_node.convert import rgb_to_image
from tests.ros_harness import RATE, node_command

pytestmark = pytest.mark.dds
MAX_FROZEN_S = 1.0


class Cameras:
    """Publishes the head and hand cameras and joint states at 15 Hz; each camera changing or frozen on request."""

    def __init__(self, h) -> None:
        self.h = h
        self.frozen = {"head": False, "hand": False}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        i = 0
        while not self._stop.wait(1 / 15):
            stamp = self.h.stamp()
            head = self.h.frames[0 if self.frozen["head"] else i % 4]
            hand = self.h.frames[1 if self.frozen["hand"] else (i + 1) % 4]
            self.h.head_pub.publish(rgb_to_image(head, stamp=stamp))
            self.h.hand_pub.publish(rgb_to_image(hand, stamp=stamp))
            self.h.publish_inputs(i, head=False, hand=False)
            i += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def _moving(h, since: float) -> bool:
    return any(np.any(v != 0) for t, v in h.commands(since=since))


def _control(h, name: str) -> tuple[int, str]:
    for msg in reversed(h.rec.diagnostics):
        for st in msg.status:
            if st.name == f"{name}: control loop":
                return st.level, st.message
    return -1, ""


def test_a_frozen_head_camera_stops_the_robot_until_its_frames_change_and_a_frozen_hand_camera_does_not(
    checkpoint, harness_factory
):
    name = "robovlm_frozen"
    h = harness_factory({"model_path": checkpoint})  # the peer; its own node stays unconfigured
    cams = Cameras(h)
    proc = subprocess.Popen(
        node_command(
            f"model_path:={checkpoint}",
            "autostart:=true",
            "instruction:=go to the cup",
            "max_velocity:=[0.3]",
            f"control_rate_hz:={RATE}",
            f"max_frozen_s:={MAX_FROZEN_S}",
            name=name,
        ),
        env=os.environ.copy(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert h.wait_for(lambda: _moving(h, 0.0), 90), "the node never drove"
        cams.frozen["hand"] = True  # not required: the model runs on its missing-hand marker
        t_hand = time.monotonic()
        time.sleep(MAX_FROZEN_S + 1.5)
        assert _moving(h, t_hand + MAX_FROZEN_S + 0.5), "a frozen hand camera that is not required stopped the robot"

        cams.frozen["hand"] = False
        cams.frozen["head"] = True
        t_head = time.monotonic()
        time.sleep(MAX_FROZEN_S + 2.0)
        # detected on the first frame past max_frozen_s (15 Hz), the hold on the next tick; 0.5 s for a loaded machine
        assert not _moving(h, t_head + MAX_FROZEN_S + 0.5), "still driving on a frozen head camera"
        assert h.wait_for(lambda: _control(h, name) == (DiagnosticStatus.ERROR, "stopped: frozen_camera"), 5), _control(
            h, name
        )

        cams.frozen["head"] = False
        t_back = time.monotonic()
        assert h.wait_for(lambda: _moving(h, t_back), 30), "no motion after the head camera's frames changed again"
    finally:
        cams.close()
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "[frozen_camera] head camera: frames unchanged for" in out, out
