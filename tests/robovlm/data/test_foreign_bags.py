"""Bags recorded by someone else's robot (tests/robot_bag.py): roles mapped with --topic, types read from the bag,
joints by name, TwistStamped teleop, /tf skipped; MCAP and sqlite3."""

from __future__ import annotations

import json

import numpy as np
import pytest

from robovlm.cli import main
from robovlm.data.bag import BagError, read_bag, read_bag_episode
from robovlm.data.roles import RoleError, TopicMap, normalize_type, propose_mapping
from robovlm.utils.resources import find_resource
from robovlm_node.tools.replay import ReplayError, replay
from tests.robot_bag import FOREIGN_TOPICS, HEAD, INSTRUCTION, TELEOP, WRIST, write_robot_bag

DEMO = find_resource("models", "demo")


@pytest.fixture(scope="module")
def bags(tmp_path_factory):
    d = tmp_path_factory.mktemp("robot_bags")
    write_robot_bag(d / "robot_mcap", storage="mcap")
    write_robot_bag(d / "robot_sqlite", storage="sqlite3", plain=True, seed=1)
    return d


def test_roles_types_and_flags():
    assert normalize_type("sensor_msgs/Image") == "sensor_msgs/msg/Image"
    m = TopicMap.from_flags(["head=camera/color/image_raw", "cmd_vel=/teleop/cmd_vel"])
    assert m["head"] == "/camera/color/image_raw" and m["hand"] == "/hand_camera/image_raw"
    with pytest.raises(RoleError, match="did you mean 'head'"):
        TopicMap.from_flags(["haed=/x"])
    with pytest.raises(RoleError, match="ROLE=TOPIC"):
        TopicMap.from_flags(["head"])
    with pytest.raises(RoleError, match="role head\\) has type sensor_msgs/JointState"):
        TopicMap.from_flags(["head=/joint_states"]).check_types({"/joint_states": "sensor_msgs/JointState"})


def test_inspect_bag_lists_topics_and_proposes_a_mapping(bags, capsys):
    assert main(["inspect-bag", str(bags / "robot_mcap")]) == 0
    out = capsys.readouterr().out
    assert "/tf_static" in out and "geometry_msgs/msg/TwistStamped" in out and "50.0 Hz" in out
    assert (
        f"--topic head={HEAD} --topic hand={WRIST} --topic joint_states=/joint_states --topic cmd_vel={TELEOP} "
        f"--topic instruction={INSTRUCTION}" in out
    )
    proposal = propose_mapping({"/cam/image_raw": ("sensor_msgs/Image", 10), "/cmd": ("geometry_msgs/Twist", 5)})
    assert proposal == {"head": "/cam/image_raw", "cmd_vel": "/cmd"}


def test_episode_from_a_foreign_bag_by_role(bags):
    topics = TopicMap.from_flags(FOREIGN_TOPICS)
    ep = read_bag_episode(bags / "robot_mcap", topics, joint_names=["arm_pan", "arm_lift"], image_size=56)
    a = ep.alignment
    assert a.head_frames == 30 and a.dropped_before_start == 3  # joint states start 0.25 s after the first frame
    assert len(ep) == 27 and ep.images.shape == (27, 56, 56, 3) and ep.hand_images.shape == (27, 56, 56, 3)
    assert ep.images[..., 0].mean() > ep.images[..., 2].mean()  # the JPEG head camera decoded as RGB
    np.testing.assert_allclose(ep.joint_positions[:, 0], 0.1)  # arm_pan, selected by name out of 8
    np.testing.assert_allclose(ep.joint_positions[:, 1], 0.02)
    np.testing.assert_allclose(ep.actions[:, 0], 0.2, atol=1e-6)  # TwistStamped teleop
    assert ep.instruction.startswith("go around") and ep.frame_dt == pytest.approx(0.1, abs=0.01)
    assert a.max_offset_s["joint_states"] <= 0.03


def test_bag_reader_errors_name_the_topic_or_joint(bags):
    with pytest.raises(BagError, match=r"no messages on /cmd_vel \(role cmd_vel\).*--topic cmd_vel=TOPIC"):
        read_bag_episode(bags / "robot_mcap", TopicMap.from_flags([f"head={HEAD}"]), use_joints=False)
    with pytest.raises(BagError, match=r"lacks \['elbow'\]"):
        read_bag_episode(bags / "robot_mcap", TopicMap.from_flags(FOREIGN_TOPICS), joint_names=["arm_pan", "elbow"])


@pytest.mark.dds
def test_replay_a_foreign_mcap_bag_with_mapped_roles(bags, tmp_path):
    report = replay(bags / "robot_mcap", DEMO, topics=TopicMap.from_flags(FOREIGN_TOPICS), out=tmp_path / "out")
    assert report.skipped_topics == [HEAD, "/tf", "/tf_static"]
    assert report.inferences > 10 and report.duration_s == pytest.approx(3.2, abs=0.1)  # joint states run to 3.23 s
    assert 15.0 <= report.control_rate_hz <= 25.0  # 20 Hz in bag time
    assert 0.0 < report.camera_to_command_p50_ms < 500.0  # bag time: /clock from the bag's receive times
    assert report.stopped["no_fresh_chunk"] < 0.3 and set(report.mae) == {"linear.x", "linear.y"}
    out = read_bag(tmp_path / "out")
    assert {m.topic for m in out} == {"/cmd_vel", "/diagnostics"}
    cmd_t = [m.timestamp_ns for m in out if m.topic == "/cmd_vel"]
    assert min(cmd_t) >= 1_760_000_000 * 10**9  # written on the input bag's timeline
    text = report.format()
    assert "stopped:" in text and "skipped topics (no role): /camera/color/image_raw, /tf, /tf_static" in text


@pytest.mark.dds
def test_replay_cli_on_a_sqlite3_bag_with_plain_twist(bags, tmp_path, capsys):
    assert (
        main(
            [
                "replay",
                str(bags / "robot_sqlite"),
                "--model",
                str(DEMO),
                "--topic",
                f"head={HEAD}",
                "--topic",
                f"hand={WRIST}",
                "--topic",
                f"instruction={INSTRUCTION}",
                "--rate",
                "2",
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "MAE vs recorded cmd_vel" in out and "achieved control rate" in out


def test_replay_fails_clearly_when_a_required_role_has_no_messages(bags, capsys):
    assert main(["replay", str(bags / "robot_mcap"), "--model", str(DEMO)]) == 2
    err = capsys.readouterr().err
    assert "no messages for required role(s) head (/head_camera/image_raw)" in err and "inspect-bag" in err
    with pytest.raises(ReplayError, match="role head\\) has type"):
        replay(bags / "robot_mcap", DEMO, topics=TopicMap.from_flags(["head=/joint_states"]))


def test_train_from_bags_and_hdf5_with_topic_flags(bags, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for name in ("robot_mcap", "robot_sqlite"):
        (data / name).symlink_to(bags / name)
    flags = [
        x
        for t in [f"head={HEAD}", f"hand={WRIST}", f"cmd_vel={TELEOP}", f"instruction={INSTRUCTION}"]
        for x in ("--topic", t)
    ]
    # the sqlite3 bag has its teleop on /cmd_vel: one mapping cannot serve both, so it is trained on its own
    assert (
        main(
            [
                "train",
                "models/configs/demo.json",
                "--allow-no-learning",  # a smoke run: a few steps learn nothing
                "--data",
                str(data / "robot_mcap"),
                "--out",
                str(tmp_path / "ck"),
                *flags,
                "--joints",
                "arm_pan,arm_lift",
                "--steps",
                "3",
                "--batch-size",
                "2",
                "--eval-every",
                "3",
            ]
        )
        == 0
    )
    stats = json.loads((tmp_path / "ck" / "stats.json").read_text())
    assert stats["joint_names"] == ["arm_pan", "arm_lift"]
    assert (
        main(
            [
                "train",
                "models/configs/demo.json",
                "--allow-no-learning",  # a smoke run: a few steps learn nothing
                "--data",
                str(data / "robot_sqlite"),
                "--out",
                str(tmp_path / "ck2"),
                "--topic",
                f"head={HEAD}",
                "--topic",
                f"hand={WRIST}",
                "--topic",
                f"instruction={INSTRUCTION}",
                "--steps",
                "2",
                "--batch-size",
                "2",
                "--eval-every",
                "2",
            ]
        )
        == 2
    )


def test_ros1_style_type_names_in_a_bag(tmp_path):
    """Bags converted from ROS 1 may name types `sensor_msgs/Image`: the reader and replay take them."""
    from rosbags.rosbag2 import Writer

    from robovlm.data.bag import TYPESTORE
    from robovlm.data.bag_writer import image_msg, joint_state_msg, twist_msg

    def conn(w, topic, ros2):
        msgdef, _ = TYPESTORE.generate_msgdef(ros2)
        return w.add_connection(topic, ros2.replace("/msg/", "/"), msgdef=msgdef, rihs01=TYPESTORE.hash_rihs01(ros2))

    with Writer(tmp_path / "bag", version=9) as w:
        cam, cmd = (
            conn(w, "/head_camera/image_raw", "sensor_msgs/msg/Image"),
            conn(w, "/cmd_vel", "geometry_msgs/msg/Twist"),
        )
        js = conn(w, "/joint_states", "sensor_msgs/msg/JointState")
        for i in range(5):
            ns = 10**18 + i * 10**8
            w.write(
                cam,
                ns,
                TYPESTORE.serialize_cdr(image_msg(np.zeros((8, 8, 3), np.uint8), ns, "c"), "sensor_msgs/msg/Image"),
            )
            w.write(cmd, ns, TYPESTORE.serialize_cdr(twist_msg(0.1, 0.0, 0.0), "geometry_msgs/msg/Twist"))
            w.write(
                js, ns, TYPESTORE.serialize_cdr(joint_state_msg(["a"], np.zeros(1), ns), "sensor_msgs/msg/JointState")
            )
    assert "sensor_msgs/msg/Image" in {m.msgtype for m in read_bag(tmp_path / "bag")}
    ep = read_bag_episode(tmp_path / "bag", joint_names=["a"])
    assert len(ep) == 5 and ep.actions[0, 0] == pytest.approx(0.1)
