"""Rollout recordings: what the node writes with ``record_dir`` set, and how training reads them back.

The schema, topic by topic, is written down in ``docs/flywheel.md`` ("What a recording holds"); ``TOPICS`` and
``TYPES`` below are its names in code (``tests/robovlm/data/test_rollout.py`` keeps the two equal). One rosbag2
directory (MCAP) per episode: an activation, or a new instruction during one. Message times are the node clock
(sim time under ``use_sim_time``); standard message types only.

``custom_data`` key ``robovlm.rollout``: JSON with ``schema`` (``SCHEMA_VERSION``), ``mode`` (``drive`` | ``shadow``),
``node``, ``model``, ``fields``. In shadow mode every command is the operator's: the whole recording is a
demonstration, with no interventions.

Training (``--rollouts``) keeps, per recording, the frames that teach: ``interventions`` the operator's frames only,
``successes`` those and the policy's frames of an episode marked ``success`` but the ``PRE_INTERVENTION_S`` before
each intervention (the drift the operator corrected), ``all`` every frame. Each run of kept frames is
an episode of its own (``BAG#k``), so an action chunk never spans a frame that was left out.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rosbags.interfaces import Connection
from rosbags.rosbag2 import StoragePlugin, Writer

from .hdf5 import Episode
from .ros_types import TYPESTORE, BagError

SCHEMA_VERSION = 1
CUSTOM_KEY = "robovlm.rollout"
TOPICS = {
    "head": "/head_camera/image_raw",
    "hand": "/hand_camera/image_raw",
    "joint_states": "/joint_states",
    "instruction": "/instruction",
    "cmd_vel": "/cmd_vel",
    "source": "/robovlm/command_source",
    "policy_cmd": "/robovlm/policy_cmd",
    "plan": "/robovlm/plan",
    "intervention": "/robovlm/intervention",
    "outcome": "/robovlm/outcome",
}
TYPES = {
    "head": "sensor_msgs/msg/Image",
    "hand": "sensor_msgs/msg/Image",
    "joint_states": "sensor_msgs/msg/JointState",
    "instruction": "std_msgs/msg/String",
    "cmd_vel": "geometry_msgs/msg/TwistStamped",
    "source": "std_msgs/msg/String",
    "policy_cmd": "geometry_msgs/msg/TwistStamped",
    "plan": "trajectory_msgs/msg/JointTrajectory",
    "intervention": "std_msgs/msg/Bool",
    "outcome": "std_msgs/msg/String",
}
SOURCES = ("policy", "operator")
OUTCOMES = ("success", "failure", "aborted")
ROLLOUT_MODES = ("interventions", "successes", "all")
DEFAULT_ROLLOUT_MODE = "successes"
"""Measured in ``bench/results/flywheel.md``; docs/flywheel.md says why."""
PRE_INTERVENTION_S = 1.0
"""The policy's frames this long before an intervention are what the operator corrected: never taught."""
_TWIST = ("linear.x", "linear.y", "linear.z", "angular.x", "angular.y", "angular.z")


def parse_outcome(text: str) -> tuple[str, str]:
    """``success`` / ``failure: bumped the box`` -> (label, note); a ``ValueError`` naming the labels otherwise."""
    label, _, note = str(text).partition(":")
    label = label.strip().lower()
    if label not in OUTCOMES:
        raise ValueError(f"outcome {text!r}: starts with one of {', '.join(OUTCOMES)} (optionally ': note')")
    return label, note.strip()


def _time(ns: int):
    return TYPESTORE.types["builtin_interfaces/msg/Time"](sec=ns // 10**9, nanosec=ns % 10**9)


def _header(ns: int, frame_id: str = ""):
    return TYPESTORE.types["std_msgs/msg/Header"](stamp=_time(ns), frame_id=frame_id)


def _twist_stamped(values: Sequence[float] | np.ndarray, fields: Sequence[str], ns: int):
    v3 = TYPESTORE.types["geometry_msgs/msg/Vector3"]
    full = dict.fromkeys(_TWIST, 0.0) | {f: float(v) for f, v in zip(fields, values)}
    twist = TYPESTORE.types["geometry_msgs/msg/Twist"](
        linear=v3(x=full["linear.x"], y=full["linear.y"], z=full["linear.z"]),
        angular=v3(x=full["angular.x"], y=full["angular.y"], z=full["angular.z"]),
    )
    return TYPESTORE.types["geometry_msgs/msg/TwistStamped"](header=_header(ns), twist=twist)


class RolloutBag:
    """One episode's recording, written synchronously (the node's recorder calls it from its own thread).

    ``bytes_written`` counts the serialized messages, so a disk budget is kept without asking the filesystem."""

    def __init__(self, path: str | Path, *, fields: Sequence[str], info: dict[str, object]) -> None:
        self.path = Path(path)
        if self.path.exists():
            raise BagError(f"{self.path} already exists; a recording is a new directory")
        self.fields = list(fields)
        self.bytes_written = 0
        self.messages = 0
        self._writer = Writer(self.path, version=9, storage_plugin=StoragePlugin.MCAP)
        self._writer.set_custom_data(CUSTOM_KEY, json.dumps({"schema": SCHEMA_VERSION, "fields": self.fields, **info}))
        self._writer.open()
        self._conns: dict[str, Connection] = {}

    def _put(self, key: str, ns: int, msg: object) -> None:
        conn = self._conns.get(key)
        if conn is None:
            conn = self._conns[key] = self._writer.add_connection(TOPICS[key], TYPES[key], typestore=TYPESTORE)
        raw = TYPESTORE.serialize_cdr(msg, TYPES[key])
        self._writer.write(conn, ns, raw)
        self.bytes_written += len(raw)
        self.messages += 1

    def image(self, role: str, rgb: np.ndarray, ns: int, stamp_ns: int) -> None:
        h, w = rgb.shape[:2]
        msg = TYPESTORE.types["sensor_msgs/msg/Image"](
            header=_header(stamp_ns, f"{role}_camera"),
            height=h,
            width=w,
            encoding="rgb8",
            is_bigendian=0,
            step=w * 3,
            data=np.ascontiguousarray(rgb, np.uint8).reshape(-1),
        )
        self._put(role, ns, msg)

    def joints(self, names: Sequence[str], positions: Sequence[float], ns: int, stamp_ns: int) -> None:
        msg = TYPESTORE.types["sensor_msgs/msg/JointState"](
            header=_header(stamp_ns),
            name=list(names),
            position=np.asarray(positions, np.float64),
            velocity=np.zeros(0),
            effort=np.zeros(0),
        )
        self._put("joint_states", ns, msg)

    def text(self, key: str, value: str, ns: int) -> None:
        """``instruction``, ``outcome`` or ``source``."""
        self._put(key, ns, TYPESTORE.types["std_msgs/msg/String"](data=str(value)))

    def command(self, values: Sequence[float] | np.ndarray, source: str, ns: int) -> None:
        """What the base was told at a control tick, and who told it."""
        if source not in SOURCES:
            raise ValueError(f"command source must be one of {SOURCES}, got {source!r}")
        self._put("cmd_vel", ns, _twist_stamped(values, self.fields, ns))
        self.text("source", source, ns)

    def policy_command(self, values: Sequence[float] | np.ndarray, ns: int) -> None:
        self._put("policy_cmd", ns, _twist_stamped(values, self.fields, ns))

    def plan(self, actions: np.ndarray, dt: float, frame_stamp_ns: int, ns: int) -> None:
        """A planned chunk, ``actions`` (T, F), one every ``dt`` seconds from the frame it was planned from."""
        point = TYPESTORE.types["trajectory_msgs/msg/JointTrajectoryPoint"]
        duration = TYPESTORE.types["builtin_interfaces/msg/Duration"]
        points = []
        for k, row in enumerate(np.asarray(actions, np.float64)):
            t = int(round(k * dt * 1e9))
            points.append(
                point(
                    positions=np.zeros(0),
                    velocities=row,
                    accelerations=np.zeros(0),
                    effort=np.zeros(0),
                    time_from_start=duration(sec=t // 10**9, nanosec=t % 10**9),
                )
            )
        msg = TYPESTORE.types["trajectory_msgs/msg/JointTrajectory"](
            header=_header(frame_stamp_ns), joint_names=list(self.fields), points=points
        )
        self._put("plan", ns, msg)

    def intervention(self, started: bool, ns: int) -> None:
        self._put("intervention", ns, TYPESTORE.types["std_msgs/msg/Bool"](data=bool(started)))

    def close(self) -> None:
        self._writer.close()


# ----------------------------------------------------------------------------------------------- reading
@dataclass
class RolloutInfo:
    """What a rollout recording says besides its frames (read by ``robovlm.data.bag.read_recording``)."""

    mode: str
    """drive | shadow"""
    interventions: list[tuple[int, bool]]
    """(time ns, started) in time order."""
    outcome: tuple[str, str] | None
    """(label, note) of the last outcome message; None when none was given."""
    info: dict[str, object]

    def spans(self, end_ns: int) -> list[tuple[int, int]]:
        """Intervention spans [start, end) in ns; one still open ends at ``end_ns``; shadow: the whole recording."""
        if self.mode == "shadow":
            return [(-(2**62), end_ns + 1)]
        out, open_at = [], None
        for t, started in self.interventions:
            if started and open_at is None:
                open_at = t
            elif not started and open_at is not None:
                out.append((open_at, t))
                open_at = None
        if open_at is not None:
            out.append((open_at, end_ns + 1))
        return out


def rollout_info(custom_data: dict[str, str]) -> dict[str, object] | None:
    """The ``robovlm.rollout`` entry of a bag's ``custom_data``, or None for any other recording."""
    raw = custom_data.get(CUSTOM_KEY)
    if raw is None:
        return None
    try:
        info = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise BagError(f"custom_data {CUSTOM_KEY} is not JSON: {exc}") from exc
    if not isinstance(info, dict) or int(info.get("schema", 0)) > SCHEMA_VERSION:
        raise BagError(f"rollout schema {info!r} is newer than this version reads ({SCHEMA_VERSION})")
    return info


def operator_frames(ep: Episode, rollout: RolloutInfo) -> np.ndarray:
    """(N,) bool: the frames whose command the operator gave."""
    assert ep.frame_times_ns is not None
    t = ep.frame_times_ns
    mask = np.zeros(len(t), bool)
    for lo, hi in rollout.spans(int(t[-1])):
        mask |= (t >= lo) & (t < hi)
    return mask


def teaching_frames(ep: Episode, rollout: RolloutInfo, mode: str) -> np.ndarray:
    """(N,) bool: the frames ``--rollouts MODE`` trains on (module docstring)."""
    if mode not in ROLLOUT_MODES:
        raise ValueError(f"--rollouts must be one of {', '.join(ROLLOUT_MODES)}, got {mode!r}")
    if mode == "all":
        return np.ones(len(ep), bool)
    keep = operator_frames(ep, rollout)
    if mode == "successes" and rollout.outcome is not None and rollout.outcome[0] == "success":
        assert ep.frame_times_ns is not None
        corrected = np.zeros(len(ep), bool)  # the drift that made the operator take over
        for start, _ in rollout.spans(int(ep.frame_times_ns[-1])):
            corrected |= (ep.frame_times_ns >= start - PRE_INTERVENTION_S * 1e9) & (ep.frame_times_ns < start)
        keep |= ~corrected
    return keep


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) of every run of True in ``mask``."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2])]


def rollout_segments(ep: Episode, rollout: RolloutInfo, mode: str) -> list[Episode]:
    """The episodes training takes from a rollout recording: each run of teaching frames, named ``NAME#k``."""
    keep = teaching_frames(ep, rollout, mode)
    spans = runs(keep)
    if len(spans) == 1 and spans[0] == (0, len(ep)):
        return [ep]
    return [ep.cut(a, b, f"{ep.name}#{k}") for k, (a, b) in enumerate(spans)]
