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
    return recording_to_bag([ep], out, storage=storage, static_joints=static_joints)


def recording_to_bag(
    episodes: list[Episode],
    out: str | Path,
    *,
    storage: str = "sqlite3",
    static_joints: dict[str, float] | None = None,
    reset_s: float = 0.0,
    marker_topic: str | None = None,
    marked: set[int] | None = None,
    instruction_topic: bool = True,
    custom_data: dict[str, str] | None = None,
) -> dict[str, int]:
    """Write ``episodes`` one after the other as one rosbag2 directory ``out``, as a team records a sitting.

    Between two episodes the robot is reset for ``reset_s`` seconds: the cameras keep streaming the last frame and
    the teleop publishes zero commands. ``marker_topic``: a ``std_msgs/String`` 'start' before and 'end' after each
    episode whose index is in ``marked`` (default: all). ``instruction_topic``: each episode's instruction on
    ``/instruction`` as it starts (False: no instruction topic, as most teams record). ``custom_data``: rosbag2
    metadata ``custom_data``. Returns messages written per topic."""
    out = Path(out)
    if out.exists():
        raise BagError(f"{out} already exists; rosbag2 writes a new directory")
    plugin = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}.get(storage)
    if plugin is None:
        raise BagError(f"storage must be 'sqlite3' or 'mcap', got {storage!r}")
    if not episodes:
        raise BagError("no episodes to write")
    first = episodes[0]
    if any((e.hand_images is None) != (first.hand_images is None) for e in episodes):
        raise BagError("some episodes have a hand camera and some do not; one recording has one set of cameras")
    joint_sets: list[tuple[list[str], np.ndarray] | None] = []
    for ep in episodes:
        if ep.joint_positions is not None:
            joint_sets.append((list(ep.joint_names or []), np.asarray(ep.joint_positions)))
        elif static_joints:
            joint_sets.append((list(static_joints), np.tile(np.array(list(static_joints.values())), (len(ep), 1))))
        else:
            joint_sets.append(None)
    if any(j is None for j in joint_sets):
        log.warning(
            "%s has no joint positions: the bag gets no %s (pass static joints for a fixed pose)",
            next(e.path for e, j in zip(episodes, joint_sets) if j is None),
            TOPICS["joint_states"],
        )
    use_joints = all(j is not None for j in joint_sets)
    counts: dict[str, int] = {}
    with Writer(out, version=9, storage_plugin=plugin) as w:
        for key, value in (custom_data or {}).items():
            w.set_custom_data(key, value)
        conns = {
            "head": w.add_connection(TOPICS["head"], "sensor_msgs/msg/Image", typestore=TYPESTORE),
            "cmd_vel": w.add_connection(TOPICS["cmd_vel"], "geometry_msgs/msg/Twist", typestore=TYPESTORE),
        }
        if instruction_topic and any(e.instruction for e in episodes):
            conns["instruction"] = w.add_connection(TOPICS["instruction"], "std_msgs/msg/String", typestore=TYPESTORE)
        if use_joints:
            conns["joints"] = w.add_connection(
                TOPICS["joint_states"], "sensor_msgs/msg/JointState", typestore=TYPESTORE
            )
        if first.hand_images is not None:
            conns["hand"] = w.add_connection(TOPICS["hand"], "sensor_msgs/msg/Image", typestore=TYPESTORE)
        if marker_topic:
            conns["marker"] = w.add_connection(marker_topic, "std_msgs/msg/String", typestore=TYPESTORE)

        def put(key: str, ns: int, msg: object, msgtype: str) -> None:
            w.write(conns[key], ns, TYPESTORE.serialize_cdr(msg, msgtype))
            counts[conns[key].topic] = counts.get(conns[key].topic, 0) + 1

        def frame(ep: Episode, i: int, ns: int, action: np.ndarray, joints: tuple | None) -> None:
            put("head", ns, image_msg(ep.images[i], ns, "head_camera"), "sensor_msgs/msg/Image")
            if ep.hand_images is not None:
                put("hand", ns, image_msg(ep.hand_images[i], ns, "hand_camera"), "sensor_msgs/msg/Image")
            put("cmd_vel", ns, twist_msg(*action), "geometry_msgs/msg/Twist")
            if joints is not None:
                put("joints", ns, joint_state_msg(joints[0], joints[1][i], ns), "sensor_msgs/msg/JointState")

        string = TYPESTORE.types["std_msgs/msg/String"]
        ns = BAG_T0_NS
        for k, (ep, joints) in enumerate(zip(episodes, joint_sets)):
            dt_ns = int(round(ep.frame_dt * 1e9))
            mark = marker_topic is not None and (marked is None or k in marked)
            if mark:
                put("marker", ns, string(data="start"), "std_msgs/msg/String")
            if "instruction" in conns and ep.instruction:
                put("instruction", ns, string(data=ep.instruction), "std_msgs/msg/String")
            for i in range(len(ep)):
                frame(ep, i, ns, ep.actions[i], joints if use_joints else None)
                ns += dt_ns
            if mark:
                put("marker", ns - dt_ns // 2, string(data="end"), "std_msgs/msg/String")
            if k + 1 < len(episodes):
                for _ in range(int(round(reset_s / ep.frame_dt))):  # the reset: last frame, zero command
                    frame(ep, len(ep) - 1, ns, np.zeros(3), joints if use_joints else None)
                    ns += dt_ns
    return counts
