"""Rollout recording and takeover black-box: the node as a process over DDS records an episode in which an operator
takes over by publishing on ``operator_cmd_topic`` and lets go; the bag holds the frames at the model's size, the
plans, every tick's command with its source, the intervention and the outcome, and training reads the operator's
segment back with the operator's commands as labels. With the disk budget spent, recording stops with a WARN and the
robot drives on."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticStatus
from geometry_msgs.msg import Twist
from std_msgs.msg import String
from std_srvs.srv import Trigger

from robovlm.cli import main
from robovlm.data.bag import bag_metadata, bag_topics, deserialize, iter_bag, read_recording
from robovlm.data.dataset import is_bag, load_episodes
from robovlm.data.rollout import CUSTOM_KEY, PRE_INTERVENTION_S, TOPICS
from tests.ros_harness import RATE, VMAX, activate, node_command, node_params, statuses

pytestmark = pytest.mark.dds
OPERATOR_X = -0.1


def _message(h, part: str) -> str:
    return statuses(h).get(part, (0, ""))[1] if h.rec.diagnostics else ""


def test_a_recorded_episode_holds_frames_plans_commands_with_sources_the_intervention_and_the_outcome(
    checkpoint, harness_factory, tmp_path, capsys
):
    name = "robovlm_rec"
    record_dir = tmp_path / "rollouts"
    h = harness_factory({"model_path": checkpoint})  # the peer; its own node stays unconfigured
    teleop = h.peer.create_publisher(Twist, "/cmd_vel_teleop", 10)
    outcome = h.peer.create_publisher(String, f"/{name}/outcome", 10)
    driving = threading.Event()
    stop = threading.Event()

    def operator() -> None:
        while not stop.wait(1 / RATE):
            if driving.is_set():
                msg = Twist()
                msg.linear.x = OPERATOR_X
                teleop.publish(msg)

    threading.Thread(target=operator, daemon=True).start()
    proc = subprocess.Popen(
        node_command(
            f"model_path:={checkpoint}",
            "autostart:=true",
            "instruction:=go around the box to the cup",
            f"max_velocity:=[{VMAX}]",
            "operator_cmd_topic:=/cmd_vel_teleop",
            "takeover_timeout_s:=1.0",  # longer than a stall of the operator's thread on a busy machine (0.5 s seen)
            f"record_dir:={record_dir}",
            name=name,
        ),
        env=os.environ.copy(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        h.start_feeding()
        assert h.wait_for(lambda: any(c[1][0] > 0.9 * VMAX for c in h.commands()), 90), "the policy never drove"
        time.sleep(2 * PRE_INTERVENTION_S)  # the policy drives on: its last second before the takeover is in the bag
        driving.set()  # the operator takes over: the node's own commands stop
        assert h.wait_for(lambda: _message(h, "takeover").startswith("operator has"), 10)
        t_taken = time.monotonic()
        time.sleep(1.5)
        during = [c for c in h.commands(since=t_taken + 0.2)]
        assert not during, f"the node published {len(during)} commands while the operator had the robot"
        driving.clear()  # the operator lets go: the policy resumes from a fresh plan
        t_back = time.monotonic()
        assert h.wait_for(lambda: any(c[1][0] > 0 for c in h.commands(since=t_back)), 10), "the policy never resumed"
        mark = h.peer.create_client(Trigger, f"/{name}/mark_failure")  # an operator GUI's button
        assert mark.wait_for_service(timeout_sec=10)
        reply = mark.call_async(Trigger.Request())
        assert h.wait_for(reply.done, 10) and reply.result().success, reply.result()
        outcome.publish(String(data="success: reached the cup"))  # changed their mind: the last one counts
        h.wait_for(lambda: False, 0.5)
    finally:
        stop.set()
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    assert proc.returncode == 0, out[-3000:]
    bags = [p for p in record_dir.iterdir() if is_bag(p)]
    assert len(bags) == 1, (bags, out[-2000:])
    bag = bags[0]
    topics = bag_topics(bag)
    for key in ("head", "hand", "joint_states", "instruction", "cmd_vel", "source", "plan", "intervention", "outcome"):
        assert topics.get(TOPICS[key]) and topics[TOPICS[key]].count > 0, (key, topics)
    assert CUSTOM_KEY in bag_metadata(bag)[1]
    by_topic: dict[str, list] = {}
    for m in iter_bag(bag):
        by_topic.setdefault(m.topic, []).append(deserialize(m))
    head = by_topic[TOPICS["head"]][0]
    assert (head.height, head.width, head.encoding) == (56, 56, "rgb8")  # the model's input size
    sources = [m.data for m in by_topic[TOPICS["source"]]]
    cmds = [m.twist.linear.x for m in by_topic[TOPICS["cmd_vel"]]]
    assert len(sources) == len(cmds) and {"policy", "operator"} <= set(sources)
    operator_cmds = [x for x, s in zip(cmds, sources) if s == "operator"]
    assert np.allclose(operator_cmds, OPERATOR_X), "the labels of an intervention are the operator's commands"
    assert sources[-1] == "policy", "the policy drove again after the operator let go"
    assert [m.data for m in by_topic[TOPICS["intervention"]]] == [True, False]
    assert [m.data for m in by_topic[TOPICS["outcome"]]] == ["failure", "success: reached the cup"]
    plan = by_topic[TOPICS["plan"]][0]
    assert plan.joint_names == ["linear.x", "linear.y"] and len(plan.points) == 4
    assert by_topic[TOPICS["instruction"]][0].data == "go around the box to the cup"

    assert main(["inspect-bag", str(bag)]) == 0
    said = capsys.readouterr().out
    assert "outcome success: reached the cup" in said and "interventions: 1" in said, said[-1500:]

    segments = load_episodes(record_dir, rollouts="interventions", use_state=True, state_dim=6, image_size=56)
    assert segments and all(np.allclose(ep.actions[:, 0], OPERATOR_X) for ep in segments), [
        ep.actions[:, 0] for ep in segments
    ]
    (everything,) = load_episodes(record_dir, rollouts="all", use_state=True, state_dim=6, image_size=56)
    success = load_episodes(record_dir, rollouts="successes", use_state=True, state_dim=6, image_size=56)
    # a success: every frame but the policy's in the second of drift before the operator took over
    times = everything.frame_times_ns
    kept = np.concatenate([ep.frame_times_ns for ep in success])
    dropped = np.setdiff1d(times, kept)
    rollout = read_recording(bag, image_size=56)[1].rollout
    assert rollout is not None
    ((taken, _),) = rollout.spans(int(times[-1]))
    drift = times[(times < taken) & (times >= taken - PRE_INTERVENTION_S * 1e9)]
    assert len(drift) >= 1, (taken, times)  # the policy drove for two seconds before the takeover
    assert np.array_equal(dropped, drift), (taken, dropped, times)
    assert sum(len(ep) for ep in segments) < len(kept), (len(segments), len(kept))


def test_a_full_recording_budget_stops_recording_with_a_warning_and_never_the_robot(
    checkpoint, harness_factory, tmp_path
):
    h = harness_factory(node_params(checkpoint, record_dir=str(tmp_path / "rec"), record_max_gb=2e-5))  # 21 kB
    activate(h)
    h.start_feeding()
    assert h.wait_for(lambda: _message(h, "recording").startswith("recording stopped"), 20), statuses(h).get(
        "recording"
    )
    level, message, values, _ = statuses(h)["recording"]
    assert level == DiagnosticStatus.WARN and "record_max_gb" in message, message
    n = len(h.commands())
    assert h.wait_for(lambda: len(h.commands()) > n + RATE, 5), "the robot stopped when recording did"
    assert h.commands()[-1][1][0] > 0.9 * VMAX
