"""Writing rosbag2 files: the user's HDF5 episodes as bags the node can be replayed on, and long recordings.

``episode_to_bag`` writes one episode: the head (and, when recorded, hand) camera as ``sensor_msgs/Image`` (bgr8,
as recorded), the teleop command on ``/cmd_vel``, joint states when the episode has them (or a fixed pose the user
names), and the instruction on ``/instruction``. ``recording_to_bag`` writes several episodes into one bag the way a
team records a day: resets between demonstrations, optional episode markers and ``custom_data``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer

from .bag import TYPESTORE, BagError
from .hdf5 import Episode
from .roles import TopicMap

log = logging.getLogger(__name__)

BAG_T0_NS = 1_700_000_000 * 10**9  # fixed start time: the same episode always gives the same bag
TOPICS = TopicMap().topics  # what ``episode_to_bag`` writes: the node's default topics, by role


def _stamp(ns: int):
    t = TYPESTORE.types["builtin_interfaces/msg/Time"]
    return t(sec=ns // 10**9, nanosec=ns % 10**9)


def _header(ns: int, frame_id: str):
    return TYPESTORE.types["std_msgs/msg/Header"](stamp=_stamp(ns), frame_id=frame_id)


def image_msg(rgb: np.ndarray, ns: int, frame_id: str):
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    h, w = bgr.shape[:2]
    return TYPESTORE.types["sensor_msgs/msg/Image"](
        header=_header(ns, frame_id),
        height=h,
        width=w,
        encoding="bgr8",
        is_bigendian=0,
        step=w * 3,
        data=np.frombuffer(bgr.tobytes(), np.uint8),
    )


def twist_msg(linear_x: float, linear_y: float, angular_z: float):
    v3 = TYPESTORE.types["geometry_msgs/msg/Vector3"]
    return TYPESTORE.types["geometry_msgs/msg/Twist"](
        linear=v3(x=float(linear_x), y=float(linear_y), z=0.0), angular=v3(x=0.0, y=0.0, z=float(angular_z))
    )


def joint_state_msg(names: list[str], positions: np.ndarray, ns: int):
    return TYPESTORE.types["sensor_msgs/msg/JointState"](
        header=_header(ns, ""),
        name=list(names),
        position=np.asarray(positions, np.float64),
        velocity=np.zeros(0),
        effort=np.zeros(0),
    )


def episode_to_bag(
    ep: Episode, out: str | Path, *, storage: str = "sqlite3", static_joints: dict[str, float] | None = None
) -> dict[str, int]:
    """Write ``ep`` as a rosbag2 directory ``out``; returns messages written per topic."""
    out = Path(out)
    if out.exists():
        raise BagError(f"{out} already exists; rosbag2 writes a new directory")
    plugin = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}.get(storage)
    if plugin is None:
        raise BagError(f"storage must be 'sqlite3' or 'mcap', got {storage!r}")
    counts: dict[str, int] = {}
    dt_ns = int(round(ep.frame_dt * 1e9))
    with Writer(out, version=9, storage_plugin=plugin) as w:
        conns = {
            "head": w.add_connection(TOPICS["head"], "sensor_msgs/msg/Image", typestore=TYPESTORE),
            "cmd_vel": w.add_connection(TOPICS["cmd_vel"], "geometry_msgs/msg/Twist", typestore=TYPESTORE),
        }
        if ep.instruction:
            conns["instruction"] = w.add_connection(TOPICS["instruction"], "std_msgs/msg/String", typestore=TYPESTORE)
            msg = TYPESTORE.types["std_msgs/msg/String"](data=ep.instruction)
            w.write(conns["instruction"], BAG_T0_NS, TYPESTORE.serialize_cdr(msg, "std_msgs/msg/String"))
            counts[TOPICS["instruction"]] = 1
        joints = None
        if ep.joint_positions is not None:
            joints = (list(ep.joint_names or []), ep.joint_positions)
        elif static_joints:
            joints = (list(static_joints), np.tile(np.array(list(static_joints.values())), (len(ep), 1)))
        else:
            log.warning(
                "%s has no joint positions: the bag gets no %s (pass static joints for a fixed pose)",
                ep.path,
                TOPICS["joint_states"],
            )
        if joints is not None:
            conns["joints"] = w.add_connection(
                TOPICS["joint_states"], "sensor_msgs/msg/JointState", typestore=TYPESTORE
            )
        if ep.hand_images is not None:
            conns["hand"] = w.add_connection(TOPICS["hand"], "sensor_msgs/msg/Image", typestore=TYPESTORE)
        for i in range(len(ep)):
            ns = BAG_T0_NS + i * dt_ns
            w.write(
                conns["head"],
                ns,
                TYPESTORE.serialize_cdr(image_msg(ep.images[i], ns, "head_camera"), "sensor_msgs/msg/Image"),
            )
            if ep.hand_images is not None:
                w.write(
                    conns["hand"],
                    ns,
                    TYPESTORE.serialize_cdr(image_msg(ep.hand_images[i], ns, "hand_camera"), "sensor_msgs/msg/Image"),
                )
            w.write(conns["cmd_vel"], ns, TYPESTORE.serialize_cdr(twist_msg(*ep.actions[i]), "geometry_msgs/msg/Twist"))
            if joints is not None:
                w.write(
                    conns["joints"],
                    ns,
                    TYPESTORE.serialize_cdr(joint_state_msg(joints[0], joints[1][i], ns), "sensor_msgs/msg/JointState"),
                )
        for key, conn in conns.items():
            if key != "instruction":
                counts[conn.topic] = len(ep)
    return counts
