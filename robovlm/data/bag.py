"""rosbag2 files (sqlite3 or MCAP) without a ROS install, through the pure-Python ``rosbags`` package.

``episode_to_bag`` turns one of the user's HDF5 episodes into a bag the node can be replayed on: the head camera as
``sensor_msgs/Image`` (bgr8, as recorded), the teleop command on ``/cmd_vel``, joint states when the episode has
them (or a fixed pose the user names), and the instruction on ``/instruction``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from ..runtime.preprocess import ImageError, decode_raw_image
from .hdf5 import Episode

log = logging.getLogger(__name__)

TYPESTORE = get_typestore(Stores.ROS2_KILTED)
BAG_T0_NS = 1_700_000_000 * 10**9  # fixed start time: the same episode always gives the same bag
TOPICS = {"head": "/head_camera/image_raw", "cmd_vel": "/cmd_vel", "joints": "/joint_states",
          "instruction": "/instruction"}


class BagError(ValueError):
    """A bag cannot be read or written; the message names it."""


def _stamp(ns: int):
    t = TYPESTORE.types["builtin_interfaces/msg/Time"]
    return t(sec=ns // 10**9, nanosec=ns % 10**9)


def _header(ns: int, frame_id: str):
    return TYPESTORE.types["std_msgs/msg/Header"](stamp=_stamp(ns), frame_id=frame_id)


def image_msg(rgb: np.ndarray, ns: int, frame_id: str):
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    h, w = bgr.shape[:2]
    return TYPESTORE.types["sensor_msgs/msg/Image"](header=_header(ns, frame_id), height=h, width=w, encoding="bgr8",
                                                      is_bigendian=0, step=w * 3,
                                                      data=np.frombuffer(bgr.tobytes(), np.uint8))


def twist_msg(linear_x: float, linear_y: float, angular_z: float):
    v3 = TYPESTORE.types["geometry_msgs/msg/Vector3"]
    return TYPESTORE.types["geometry_msgs/msg/Twist"](linear=v3(x=float(linear_x), y=float(linear_y), z=0.0),
                                                        angular=v3(x=0.0, y=0.0, z=float(angular_z)))


def joint_state_msg(names: list[str], positions: np.ndarray, ns: int):
    return TYPESTORE.types["sensor_msgs/msg/JointState"](header=_header(ns, ""), name=list(names),
                                                           position=np.asarray(positions, np.float64),
                                                           velocity=np.zeros(0), effort=np.zeros(0))


def episode_to_bag(ep: Episode, out: str | Path, *, storage: str = "sqlite3",
                   static_joints: dict[str, float] | None = None) -> dict[str, int]:
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
            joints = (ep.joint_names, ep.joint_positions)
        elif static_joints:
            joints = (list(static_joints), np.tile(np.array(list(static_joints.values())), (len(ep), 1)))
        else:
            log.warning("%s has no joint positions: the bag gets no %s (pass static joints for a fixed pose)",
                        ep.path, TOPICS["joints"])
        if joints is not None:
            conns["joints"] = w.add_connection(TOPICS["joints"], "sensor_msgs/msg/JointState", typestore=TYPESTORE)
        for i in range(len(ep)):
            ns = BAG_T0_NS + i * dt_ns
            w.write(conns["head"], ns, TYPESTORE.serialize_cdr(image_msg(ep.images[i], ns, "head_camera"),
                                                               "sensor_msgs/msg/Image"))
            w.write(conns["cmd_vel"], ns, TYPESTORE.serialize_cdr(twist_msg(*ep.actions[i]), "geometry_msgs/msg/Twist"))
            if joints is not None:
                w.write(conns["joints"], ns, TYPESTORE.serialize_cdr(joint_state_msg(joints[0], joints[1][i], ns),
                                                                     "sensor_msgs/msg/JointState"))
        for key, conn in conns.items():
            if key != "instruction":
                counts[conn.topic] = len(ep)
    return counts


@dataclass
class BagMessage:
    topic: str
    msgtype: str
    timestamp_ns: int
    data: bytes


def read_bag(path: str | Path) -> list[BagMessage]:
    """All messages of a rosbag2 directory (sqlite3 or MCAP), in time order, as raw CDR."""
    path = Path(path)
    if not path.exists():
        raise BagError(f"bag not found: {path}")
    try:
        with AnyReader([path], default_typestore=TYPESTORE) as reader:
            return [BagMessage(c.topic, c.msgtype, t, bytes(raw)) for c, t, raw in reader.messages()]
    except Exception as exc:  # rosbags raises several types for unreadable bags
        raise BagError(f"{path}: cannot read bag: {exc}") from exc


def deserialize(msg: BagMessage):
    return TYPESTORE.deserialize_cdr(msg.data, msg.msgtype)


def _image_rgb(msg) -> np.ndarray:
    try:
        return decode_raw_image(msg.encoding, msg.height, msg.width, msg.step, np.asarray(msg.data, dtype=np.uint8))
    except ImageError as exc:
        raise BagError(f"bad image in bag: {exc}") from exc


def read_bag_episode(path: str | Path, instructions: dict[str, str] | None = None, *,
                     head_topic: str = TOPICS["head"], hand_topic: str = "/hand_camera/image_raw",
                     joint_names: list[str] | None = None):
    """A rosbag2 recording as an ``Episode``: one frame per head image; the hand image, joint state and ``cmd_vel``
    in effect at that frame's stamp (the latest at or before it) are aligned to it."""
    from .hdf5 import SCENARIO_RE, Episode

    msgs = read_bag(path)
    heads = [m for m in msgs if m.topic == head_topic]
    if not heads:
        raise BagError(f"{path}: no {head_topic} images")

    def stamp(m: BagMessage) -> int:
        d = deserialize(m)
        h = getattr(d, "header", None)
        return h.stamp.sec * 10**9 + h.stamp.nanosec if h is not None else m.timestamp_ns

    def latest(topic: str):
        items = [(stamp(m) if "Image" in m.msgtype or "JointState" in m.msgtype else m.timestamp_ns, m)
                 for m in msgs if m.topic == topic]
        items.sort(key=lambda x: x[0])
        return [t for t, _ in items], [m for _, m in items]

    head_t = [stamp(m) for m in heads]
    hand_t, hands = latest(hand_topic)
    js_t, jss = latest(TOPICS["joints"])
    cmd_t, cmds = latest(TOPICS["cmd_vel"])

    def at(ts: list[int], items: list, t: int):
        i = int(np.searchsorted(ts, t, side="right")) - 1
        return items[i] if i >= 0 else None

    images, hand_imgs, joints, actions = [], [], [], []
    names = joint_names
    for t, m in zip(head_t, heads):
        images.append(_image_rgb(deserialize(m)))
        h = at(hand_t, hands, t)
        hand_imgs.append(_image_rgb(deserialize(h)) if h is not None else None)
        j = at(js_t, jss, t)
        if j is not None:
            js = deserialize(j)
            names = names or list(js.name)
            pos = dict(zip(js.name, js.position))
            joints.append([pos.get(n, np.nan) for n in names])
        else:
            joints.append(None)
        c = at(cmd_t, cmds, t)
        tw = deserialize(c) if c is not None else None
        actions.append([tw.linear.x, tw.linear.y, tw.angular.z] if tw is not None else [0.0, 0.0, 0.0])
    instruction = None
    texts = [deserialize(m).data for m in msgs if m.topic == TOPICS["instruction"]]
    name = Path(path).name
    match = SCENARIO_RE.search(name)
    if texts:
        instruction = texts[-1]
    elif match and instructions:
        instruction = instructions.get(match.group(0))
    has_joints = names is not None and all(j is not None and not np.any(np.isnan(j)) for j in joints)
    has_hand = all(h is not None for h in hand_imgs)
    dts = np.diff(head_t) * 1e-9
    return Episode(path=Path(path), name=name, scenario=match.group(0) if match else None, instruction=instruction,
                   images=np.stack(images), actions=np.asarray(actions, np.float32),
                   event_types=["start_action"] * len(images), frame_dt=float(np.median(dts)) if len(dts) else 0.1,
                   joint_positions=np.asarray(joints, np.float32) if has_joints else None,
                   joint_names=names if has_joints else None, hand_images=np.stack(hand_imgs) if has_hand else None)
