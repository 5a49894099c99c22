"""Bags that look like someone else's robot, written with rosbags (not with this project's writer).

``write_robot_bag``: a RealSense-style head camera (``/camera/color/image_raw`` rgb8 640x480 and its JPEG
``/compressed`` twin), a bgr8 wrist camera of another size, 8 joints in another order than the model's (with
extras) at 50 Hz starting after the first frame, teleop ``TwistStamped`` on ``/teleop/cmd_vel``, ``/tf`` and
``/tf_static``, the instruction on ``/robot/instruction``, receive times with jitter, MCAP by default.
``plain=True``: sqlite3-style variant with plain ``Twist`` on ``/cmd_vel`` and no compressed twin.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer

from robovlm.data.bag import TYPESTORE
from robovlm.data.bag_writer import _header

JOINTS = ["wheel_fl", "arm_lift", "wheel_fr", "gripper", "arm_pan", "wheel_rl", "wheel_rr", "arm_wrist"]
T0 = 1_760_000_000 * 10**9
HEAD = "/camera/color/image_raw"
WRIST = "/wrist_camera/image_raw"
TELEOP = "/teleop/cmd_vel"
INSTRUCTION = "/robot/instruction"
FOREIGN_TOPICS = [f"head={HEAD}/compressed", f"hand={WRIST}", f"cmd_vel={TELEOP}", f"instruction={INSTRUCTION}"]


def _t(cls: str):
    return TYPESTORE.types[cls]


def _ser(msg, cls: str) -> bytes:
    return TYPESTORE.serialize_cdr(msg, cls)


def write_robot_bag(
    out: Path,
    *,
    seconds: float = 3.0,
    fps: float = 10.0,
    storage: str = "mcap",
    plain: bool = False,
    instruction: str = "go around the box on the left and stop at the cup",
    seed: int = 0,
) -> dict:
    rng = np.random.default_rng(seed)
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    events: list[tuple[int, str, bytes]] = []
    twist_type = "geometry_msgs/msg/Twist" if plain else "geometry_msgs/msg/TwistStamped"
    cmd_topic = "/cmd_vel" if plain else TELEOP
    frames = int(seconds * fps)
    v3, tw = _t("geometry_msgs/msg/Vector3"), _t("geometry_msgs/msg/Twist")
    for i in range(frames):
        stamp = T0 + int(i * 1e9 / fps)
        rx = stamp + int(rng.integers(5, 25) * 1e6)  # receive time: capture plus transport latency
        rgb = np.full((480, 640, 3), 40, np.uint8)
        x = 80 + 20 * i
        rgb[200:280, x % 600 : x % 600 + 40] = (200, 30, 30)  # a red box moving across the view
        img = _t("sensor_msgs/msg/Image")(
            header=_header(stamp, "camera_color_optical_frame"),
            height=480,
            width=640,
            encoding="rgb8",
            is_bigendian=0,
            step=640 * 3,
            data=np.frombuffer(rgb.tobytes(), np.uint8),
        )
        events.append((rx, HEAD, _ser(img, "sensor_msgs/msg/Image")))
        if not plain:
            ok, jpg = cv2.imencode(".jpg", rgb[:, :, ::-1])
            comp = _t("sensor_msgs/msg/CompressedImage")(
                header=_header(stamp, "camera_color_optical_frame"),
                format="rgb8; jpeg compressed bgr8",
                data=np.frombuffer(jpg.tobytes(), np.uint8),
            )
            events.append((rx + 2_000_000, HEAD + "/compressed", _ser(comp, "sensor_msgs/msg/CompressedImage")))
        bgr = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
        wimg = _t("sensor_msgs/msg/Image")(
            header=_header(stamp, "wrist_camera"),
            height=240,
            width=320,
            encoding="bgr8",
            is_bigendian=0,
            step=320 * 3,
            data=np.frombuffer(bgr.tobytes(), np.uint8),
        )
        events.append((rx + 1_000_000, WRIST, _ser(wimg, "sensor_msgs/msg/Image")))
        twist = tw(linear=v3(x=0.2, y=0.05 * (1 if i < frames // 2 else -1), z=0.0), angular=v3(x=0.0, y=0.0, z=0.0))
        msg = twist if plain else _t(twist_type)(header=_header(stamp, "base_link"), twist=twist)
        events.append((stamp + 3_000_000, cmd_topic, _ser(msg, twist_type)))
    for k in range(int(seconds * 50)):  # joint states at 50 Hz, starting 0.25 s after the first frame
        stamp = T0 + 250_000_000 + k * 20_000_000
        pos = {n: 0.01 * k for n in JOINTS}
        pos["arm_pan"], pos["arm_lift"] = 0.1, 0.02
        js = _t("sensor_msgs/msg/JointState")(
            header=_header(stamp, ""),
            name=JOINTS,
            position=np.array([pos[n] for n in JOINTS]),
            velocity=np.zeros(0),
            effort=np.zeros(0),
        )
        events.append((stamp + 1_000_000, "/joint_states", _ser(js, "sensor_msgs/msg/JointState")))
    tr = _t("geometry_msgs/msg/TransformStamped")(
        header=_header(T0, "odom"),
        child_frame_id="base_link",
        transform=_t("geometry_msgs/msg/Transform")(
            translation=v3(x=0.0, y=0.0, z=0.0), rotation=_t("geometry_msgs/msg/Quaternion")(x=0.0, y=0.0, z=0.0, w=1.0)
        ),
    )
    tf = _t("tf2_msgs/msg/TFMessage")(transforms=[tr])
    for k in range(int(seconds * 30)):
        events.append((T0 + k * 33_000_000, "/tf", _ser(tf, "tf2_msgs/msg/TFMessage")))
    events.append((T0, "/tf_static", _ser(tf, "tf2_msgs/msg/TFMessage")))
    events.append((T0, INSTRUCTION, _ser(_t("std_msgs/msg/String")(data=instruction), "std_msgs/msg/String")))
    types = {
        HEAD: "sensor_msgs/msg/Image",
        HEAD + "/compressed": "sensor_msgs/msg/CompressedImage",
        WRIST: "sensor_msgs/msg/Image",
        cmd_topic: twist_type,
        "/joint_states": "sensor_msgs/msg/JointState",
        "/tf": "tf2_msgs/msg/TFMessage",
        "/tf_static": "tf2_msgs/msg/TFMessage",
        INSTRUCTION: "std_msgs/msg/String",
    }
    counts: dict[str, int] = {}
    with Writer(out, version=9, storage_plugin=plugin) as w:
        conns = {}
        for t, topic, data in sorted(events, key=lambda e: e[0]):
            if topic not in conns:
                conns[topic] = w.add_connection(topic, types[topic], typestore=TYPESTORE)
            w.write(conns[topic], t, data)
            counts[topic] = counts.get(topic, 0) + 1
    return counts
