"""Reading rosbag2 files (sqlite3 or MCAP) without a ROS install, through the pure-Python ``rosbags`` package.

Reading is by role (``robovlm.data.roles``) and streams, so bags recorded by other robots work too; writing is in
``robovlm.data.bag_writer``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.rosbag2 import Reader

from ..utils.images import ImageError, decode_compressed_image, decode_raw_image, resize_rgb
from .hdf5 import Episode
from .instructions import INSTRUCTION_KEY, EpisodeTexts, Found, InstructionSources
from .recording import MARKER_TYPES, Timeline, episodes_of, marker_value
from .roles import ROLES, TopicMap, is_compressed, is_stamped_twist, normalize_type
from .rollout import TOPICS as ROLLOUT_TOPICS
from .rollout import RolloutInfo, parse_outcome, rollout_info
from .ros_types import TYPESTORE, BagError

log = logging.getLogger(__name__)

__all__ = ["TYPESTORE", "BagError", "BagMessage", "TopicInfo", "iter_bag", "read_bag", "read_recording"]


@dataclass
class BagMessage:
    topic: str
    msgtype: str
    """ROS 2 type name (ROS 1 style names in a bag are normalized)."""
    timestamp_ns: int
    """Receive time, as the recorder stored it."""
    data: bytes


@dataclass
class TopicInfo:
    msgtype: str
    count: int
    first_ns: int | None = None
    last_ns: int | None = None

    @property
    def rate_hz(self) -> float:
        if self.count < 2 or self.first_ns is None or self.last_ns is None or self.last_ns <= self.first_ns:
            return 0.0
        return (self.count - 1) / ((self.last_ns - self.first_ns) * 1e-9)


def _open(path: Path) -> Reader:
    """The rosbag2 reader itself, not ``AnyReader``: it hands out raw CDR without checking the bag's type names
    against a typestore, which fails on ROS 1 style names (``sensor_msgs/Image``); types are normalized here."""
    if not path.exists():
        raise BagError(f"bag not found: {path}")
    return Reader(path)


def iter_bag(path: str | Path, topics: set[str] | None = None) -> Iterator[BagMessage]:
    """Messages of a rosbag2 directory (sqlite3 or MCAP) in receive-time order, as raw CDR, one at a time (memory
    stays flat in bag length). ``topics``: only these."""
    path = Path(path)
    try:
        with _open(path) as reader:
            conns = [c for c in reader.connections if topics is None or c.topic in topics]
            if not conns:  # rosbags reads every connection when given none
                return
            for c, t, raw in reader.messages(connections=conns):
                yield BagMessage(c.topic, normalize_type(c.msgtype), t, bytes(raw))
    except BagError:
        raise
    except Exception as exc:  # rosbags raises several types for unreadable bags
        raise BagError(f"{path}: cannot read bag: {exc}") from exc


def read_bag(path: str | Path, topics: set[str] | None = None) -> list[BagMessage]:
    """All messages (of ``topics``) in a list: for small bags and tests; ``iter_bag`` streams."""
    return list(iter_bag(path, topics))


def bag_metadata(path: str | Path) -> tuple[int, dict[str, str]]:
    """The bag's first message time (ns) and its ``custom_data`` (rosbag2 metadata version 6 and later)."""
    path = Path(path)
    try:
        with _open(path) as reader:
            # metadata.yaml's own (version 6+) or, for a bare MCAP file, the storage's
            meta = getattr(reader, "metadata", None) or reader.storage.metadata
            return int(reader.start_time), dict(getattr(meta, "custom", None) or {})
    except BagError:
        raise
    except Exception as exc:
        raise BagError(f"{path}: cannot read bag: {exc}") from exc


def bag_topics(path: str | Path, *, timing: bool = False) -> dict[str, TopicInfo]:
    """topic -> type and count from the bag's metadata; ``timing`` also reads every receive time (for rates)."""
    path = Path(path)
    try:
        with _open(path) as reader:
            info: dict[str, TopicInfo] = {}
            for c in reader.connections:
                prev = info.get(c.topic)
                info[c.topic] = TopicInfo(normalize_type(c.msgtype), c.msgcount + (prev.count if prev else 0))
            if timing:
                for c, t, _ in reader.messages():
                    ti = info[c.topic]
                    ti.first_ns = t if ti.first_ns is None else min(ti.first_ns, t)
                    ti.last_ns = t if ti.last_ns is None else max(ti.last_ns, t)
            return info
    except BagError:
        raise
    except Exception as exc:
        raise BagError(f"{path}: cannot read bag: {exc}") from exc


def deserialize(msg: BagMessage):
    return TYPESTORE.deserialize_cdr(msg.data, msg.msgtype)


def decode_image(msg: BagMessage, size: int | None = None) -> np.ndarray:
    """A camera message (Image or CompressedImage) -> (H, W, 3) uint8 RGB, resized to (size, size) if given."""
    d = deserialize(msg)
    try:
        if not is_compressed(msg.msgtype):  # resized from the buffer, as the node does (no full-size copy)
            return decode_raw_image(
                d.encoding, d.height, d.width, d.step, np.asarray(d.data, dtype=np.uint8), size=size
            )
        rgb = decode_compressed_image(d.format, np.asarray(d.data, dtype=np.uint8))
    except ImageError as exc:
        raise BagError(f"bad image on {msg.topic} at {msg.timestamp_ns} ns: {exc}") from exc
    return resize_rgb(rgb, size) if size else rgb


def twist_values(msg: BagMessage) -> tuple[float, float, float]:
    """``[linear.x, linear.y, angular.z]`` of a Twist or TwistStamped message."""
    d = deserialize(msg)
    tw = d.twist if is_stamped_twist(msg.msgtype) else d
    return float(tw.linear.x), float(tw.linear.y), float(tw.angular.z)


@dataclass
class Alignment:
    """How a bag's streams were aligned to its head frames (what ``read_bag_episode`` reports)."""

    head_frames: int = 0
    dropped_before_start: int = 0
    """Head frames before every required stream had started."""
    dropped_stale: int = 0
    """Head frames whose latest required sample was older than the tolerance."""
    max_offset_s: dict[str, float] = field(default_factory=dict)
    """Per role, the largest gap between a kept head frame and the sample aligned to it."""

    def format(self) -> str:
        offsets = ", ".join(f"{r} {v * 1e3:.0f} ms" for r, v in self.max_offset_s.items()) or "none"
        return (
            f"{self.head_frames} head frames: {self.dropped_before_start} before every stream started and "
            f"{self.dropped_stale} with a stale stream dropped; largest offset per role: {offsets}"
        )


def _latest(times: np.ndarray, t: int) -> int:
    return int(np.searchsorted(times, t, side="right")) - 1


def read_recording(
    path: str | Path,
    topics: TopicMap | None = None,
    *,
    joint_names: list[str] | None = None,
    image_size: int | None = None,
    tolerance_s: float = 0.5,
    cmd_vel_timeout_s: float = 0.5,
    use_hand: bool = True,
    use_joints: bool = True,
    marker_topic: str | None = None,
) -> tuple[Episode, Timeline]:
    """A rosbag2 recording as an ``Episode``, by role (``topics``; default: the node's topics).

    One frame per head image. Every other role is aligned to it by receive time (one clock for every topic; header
    stamps may come from other clocks, and Twist has none): the latest sample at or before the frame. Frames before
    every required stream (head, cmd_vel, joint states when ``use_joints``, the hand camera when the bag has it and
    ``use_hand``) has started are dropped and counted; so are frames whose latest required sample is older than
    ``tolerance_s``. The teleop command older than ``cmd_vel_timeout_s`` counts as zero (a controller would have
    stopped, like diff_drive_controller). Joints are selected by name (``joint_names``; default: the first joint
    state's names, in its order); extra joints are ignored, a missing one is an error. Images are stored at
    ``image_size`` (the model's input size) when given, so a long bag of full-size frames fits in memory.
    Returns the whole recording as one episode (its ``alignment`` says what was dropped and the largest offsets;
    its instruction is not looked up) and the bag's ``Timeline``: instruction messages, the episode markers on
    ``marker_topic`` (``robovlm.data.recording``), the first message's time and ``custom_data``.
    """
    from .hdf5 import SCENARIO_RE

    path = Path(path)
    topics = topics or TopicMap()
    present = bag_topics(path)
    found = topics.check_types({t: i.msgtype for t, i in present.items()})
    required = ["head", "cmd_vel"] + (["joint_states"] if use_joints else [])
    for role in required:
        if role not in found or present[topics[role]].count == 0:
            listing = ", ".join(f"{t} ({i.msgtype}, {i.count})" for t, i in sorted(present.items()))
            raise BagError(
                f"{path}: no messages on {topics[role]} (role {role}); the bag has: {listing}. Map the role "
                f"with --topic {role}=TOPIC (robovlm inspect-bag {path} proposes a mapping)"
            )
    hand_on = use_hand and "hand" in found and present[topics["hand"]].count > 0
    wanted = {topics[r] for r in ("head", "cmd_vel", "instruction")} | (
        {topics["joint_states"]} if use_joints else set()
    )
    start_ns, custom = bag_metadata(path)
    timeline = Timeline(
        start_ns=start_ns,
        custom_data=custom,
        instruction_topic=topics["instruction"] if "instruction" in found else None,
        marker_topic=marker_topic,
    )
    rollout_topics = _rollout_topics(path, custom, timeline)
    wanted |= rollout_topics
    if marker_topic is not None:
        if marker_topic not in present:
            raise BagError(f"{path}: no episode marker topic {marker_topic} (topics: {', '.join(sorted(present))})")
        if present[marker_topic].msgtype not in MARKER_TYPES:
            raise BagError(
                f"{path}: episode markers on {marker_topic} have type {present[marker_topic].msgtype}; markers are "
                f"{' or '.join(MARKER_TYPES)}"
            )
        wanted.add(marker_topic)
    if hand_on:
        wanted.add(topics["hand"])
    role_of = {topics[r]: r for r in ROLES}
    heads: list[tuple[int, np.ndarray]] = []
    samples: dict[str, list[tuple[int, object]]] = {"hand": [], "joint_states": [], "cmd_vel": []}
    names = list(joint_names) if joint_names else None
    for m in iter_bag(path, wanted):
        if m.topic in rollout_topics:
            _rollout_event(m, timeline, path)
            continue
        if m.topic == marker_topic:
            timeline.markers.append(
                (m.timestamp_ns, marker_value(m.msgtype, deserialize(m), f"{path}: {m.topic} at {m.timestamp_ns} ns"))
            )
            continue
        role = role_of[m.topic]
        if role == "head":
            heads.append((m.timestamp_ns, decode_image(m, image_size)))
        elif role == "hand":
            samples["hand"].append((m.timestamp_ns, decode_image(m, image_size)))
        elif role == "cmd_vel":
            samples["cmd_vel"].append((m.timestamp_ns, twist_values(m)))
        elif role == "instruction":
            timeline.instructions.append((m.timestamp_ns, deserialize(m).data))
        elif role == "joint_states":
            js = deserialize(m)
            if names is None:
                names = list(js.name)
            pos = dict(zip(js.name, np.asarray(js.position, dtype=np.float64)))
            missing = [n for n in names if n not in pos]
            if missing:
                raise BagError(
                    f"{path}: joint state on {m.topic} at {m.timestamp_ns} ns lacks {missing} (has "
                    f"{list(js.name)}); choose joints with --joints"
                )
            samples["joint_states"].append((m.timestamp_ns, [pos[n] for n in names]))
    report = Alignment(head_frames=len(heads))
    streams = {r: (np.array([t for t, _ in v], dtype=np.int64), [x for _, x in v]) for r, v in samples.items() if v}
    need = [r for r in ("joint_states", "hand") if r in streams and (r != "hand" or hand_on)]
    images, hand_imgs, joints, actions, kept_t = [], [], [], [], []
    cmd_timeout_ns = int(cmd_vel_timeout_s * 1e9)
    cmd_t, cmd_v = streams["cmd_vel"]
    first_cmd = int(cmd_t[0])
    for t, rgb in heads:
        idx = {r: _latest(streams[r][0], t) for r in need}
        if t < first_cmd or any(i < 0 for i in idx.values()):
            report.dropped_before_start += 1
            continue
        offsets = {r: (t - int(streams[r][0][i])) * 1e-9 for r, i in idx.items()}
        if any(o > tolerance_s for o in offsets.values()):
            report.dropped_stale += 1
            continue
        for r, o in offsets.items():
            report.max_offset_s[r] = max(report.max_offset_s.get(r, 0.0), o)
        c = _latest(cmd_t, t)
        actions.append(cmd_v[c] if t - int(cmd_t[c]) <= cmd_timeout_ns else (0.0, 0.0, 0.0))
        images.append(rgb)
        kept_t.append(t)
        if "hand" in idx:
            hand_imgs.append(streams["hand"][1][idx["hand"]])
        if "joint_states" in idx:
            joints.append(streams["joint_states"][1][idx["joint_states"]])
    if not images:
        raise BagError(f"{path}: no head frame has every required stream within {tolerance_s} s ({report.format()})")
    name = path.name
    match = SCENARIO_RE.search(name)
    dts = np.diff(kept_t) * 1e-9
    ep = Episode(
        path=path,
        name=name,
        scenario=match.group(0) if match else None,
        instruction=None,
        images=np.stack(images),
        actions=np.asarray(actions, np.float32),
        event_types=["start_action"] * len(images),
        frame_dt=float(np.median(dts)) if len(dts) else 0.1,
        joint_positions=np.asarray(joints, np.float32) if joints else None,
        joint_names=names if joints else None,
        hand_images=np.stack(hand_imgs) if hand_imgs else None,
        alignment=report,
        frame_times_ns=np.asarray(kept_t, np.int64),
    )
    if report.dropped_before_start or report.dropped_stale:
        log.info("%s: %s", path, report.format())
    return ep, timeline


def _rollout_topics(path: Path, custom: dict[str, str], timeline: Timeline) -> set[str]:
    """For a node's rollout recording, set ``timeline.rollout`` and return its event topics to read."""
    info = rollout_info(custom)
    if info is None:
        return set()
    timeline.rollout = RolloutInfo(mode=str(info.get("mode", "drive")), interventions=[], outcome=None, info=info)
    return {ROLLOUT_TOPICS["intervention"], ROLLOUT_TOPICS["outcome"]}


def _rollout_event(m: BagMessage, timeline: Timeline, path: Path) -> None:
    assert timeline.rollout is not None
    data = deserialize(m).data
    if m.topic == ROLLOUT_TOPICS["intervention"]:
        timeline.rollout.interventions.append((m.timestamp_ns, bool(data)))
        return
    try:
        timeline.rollout.outcome = parse_outcome(data)
    except ValueError as exc:
        log.warning("%s: %s at %d ns ignored", path, exc, m.timestamp_ns)


def read_bag_episode(
    path: str | Path,
    topics: TopicMap | None = None,
    *,
    instructions: InstructionSources | dict[str, str] | None = None,
    **options: Any,
) -> Episode:
    """A whole bag as one episode (``read_recording``'s options) with its instruction found by ``instructions``
    (the user's sources or a scenario mapping; ``robovlm.data.instructions``), or None if no source has one."""
    ep, timeline = read_recording(path, topics, **options)
    return episodes_of(ep, timeline, [], InstructionSources.of(instructions))[0][0]


def bag_instruction(path: str | Path, topics: TopicMap, sources: InstructionSources) -> Found:
    """The instruction of a whole bag, as ``replay`` uses it: the last message on its instruction topic, else the
    user's sources in their order (``robovlm.data.instructions``); an ``EpisodeError`` naming every source tried
    when none has one."""
    from .hdf5 import SCENARIO_RE

    path = Path(path)
    said = [deserialize(m).data for m in iter_bag(path, {topics["instruction"]})]
    match = SCENARIO_RE.search(path.name)
    texts = EpisodeTexts(
        episode=path.name,
        recording=path.name,
        scenario=match.group(0) if match else None,
        topic=said[-1] if said else None,
        topic_name=topics["instruction"],
        custom_data=bag_metadata(path)[1].get(INSTRUCTION_KEY),
    )
    return sources.resolve(texts)
