"""Shadow mode black-box: the node as a process over DDS beside an operator who drives by teleop. Nothing ever
reaches ``cmd_vel`` (no publisher exists), the policy's commands go to ``~/cmd_vel_shadow``, and the agreement with
the operator (``robovlm.runtime.agreement``, as ``robovlm replay`` reports it) is in diagnostics and on
``~/agreement``: high while the operator drives as the policy does, low when the operator reverses."""

from __future__ import annotations

import os
import signal
import subprocess
import threading

import pytest
from diagnostic_msgs.msg import DiagnosticStatus
from geometry_msgs.msg import Twist

from tests.ros_harness import RATE, VMAX, node_command

pytestmark = pytest.mark.dds
WINDOW_S = 2.0


def _values(st: DiagnosticStatus) -> dict[str, str]:
    return {kv.key: kv.value for kv in st.values}


def test_shadow_mode_never_publishes_cmd_vel_and_reports_agreement_with_the_operator(checkpoint, harness_factory):
    name = "robovlm_shadow"
    h = harness_factory({"model_path": checkpoint})  # the peer (records cmd_vel); its own node stays unconfigured
    shadow_cmds: list[Twist] = []
    agreement: list[DiagnosticStatus] = []
    h.peer.create_subscription(Twist, f"/{name}/cmd_vel_shadow", shadow_cmds.append, 50)
    h.peer.create_subscription(DiagnosticStatus, f"/{name}/agreement", agreement.append, 10)
    teleop = h.peer.create_publisher(Twist, "/cmd_vel_teleop", 10)
    operator_x = [VMAX]  # the tiny checkpoint's linear.x saturates forward: the operator agrees first
    stop = threading.Event()

    def drive() -> None:
        while not stop.wait(1 / RATE):
            msg = Twist()
            msg.linear.x = operator_x[0]
            teleop.publish(msg)

    operator = threading.Thread(target=drive, daemon=True)
    operator.start()
    proc = subprocess.Popen(
        node_command(
            f"model_path:={checkpoint}",
            "autostart:=true",
            "instruction:=go to the cup",
            f"max_velocity:=[{VMAX}]",
            "output_mode:=shadow",
            "operator_cmd_topic:=/cmd_vel_teleop",
            f"agreement_window_s:={WINDOW_S}",
            name=name,
        ),
        env=os.environ.copy(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        h.start_feeding()
        assert h.wait_for(lambda: any(m.linear.x > 0.9 * VMAX for m in shadow_cmds), 90), "no shadow command"
        assert h.peer.count_publishers("/cmd_vel") == 0, "shadow mode must not create cmd_vel"
        assert not h.commands(), "a command reached cmd_vel in shadow mode"

        def x_same_sign() -> float:
            return float(_values(agreement[-1]).get("linear.x_same_sign", "nan")) if agreement else float("nan")

        assert h.wait_for(lambda: x_same_sign() > 0.9, 10), agreement[-1] if agreement else "no ~/agreement"
        values = _values(agreement[-1])
        assert int(values["compared"]) > 0 and float(values["linear.x_mae"]) < 0.1, values
        diag = [st for msg in h.rec.diagnostics for st in msg.status if st.name == f"{name}: shadow"]
        assert diag and "linear.x: MAE" in diag[-1].message, diag[-1] if diag else "no shadow status"

        operator_x[0] = -VMAX  # the operator reverses: the policy does not
        assert h.wait_for(lambda: x_same_sign() < 0.1, 3 * WINDOW_S + 5), agreement[-1]
        assert float(_values(agreement[-1])["linear.x_mae"]) > VMAX, agreement[-1]
        assert not h.commands(), "a command reached cmd_vel in shadow mode"
    finally:
        stop.set()
        operator.join()
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert not h.commands(), "the final zero went to cmd_vel in shadow mode"
