"""Roles, not hard-coded topics: one mapping from what a topic is for to where a bag or robot publishes it.

Replay, the bag reader, training and ``inspect-bag`` all name their inputs by role. ``--topic ROLE=TOPIC``
(repeatable) overrides a role's topic; the defaults equal the node's default topics. A role's message type is read
from the bag, never from a flag: cameras are ``Image`` or ``CompressedImage``, ``cmd_vel`` is ``Twist`` or
``TwistStamped``; ROS 1 style names (``sensor_msgs/Image``) are accepted.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

from ..errors import UserError

ROLES = ("head", "hand", "joint_states", "cmd_vel", "instruction")

NODE_TOPICS = {
    "head": "head_camera/image_raw",
    "hand": "hand_camera/image_raw",
    "joint_states": "joint_states",
    "cmd_vel": "cmd_vel",
    "instruction": "instruction",
}
"""The node's default topics (relative, so a namespace applies); in a bag they are absolute (``/`` prefixed)."""

ROLE_TYPES = {
    "head": ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage"),
    "hand": ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage"),
    "joint_states": ("sensor_msgs/msg/JointState",),
    "cmd_vel": ("geometry_msgs/msg/Twist", "geometry_msgs/msg/TwistStamped"),
    "instruction": ("std_msgs/msg/String",),
}
"""Message types each role accepts (ROS 2 names)."""


class RoleError(UserError, ValueError):
    """A role mapping is malformed, or a bag's topic has a type its role cannot take; the message says which."""


def normalize_type(msgtype: str) -> str:
    """``sensor_msgs/Image`` (ROS 1 style) or ``sensor_msgs/msg/Image`` -> ``sensor_msgs/msg/Image``."""
    parts = msgtype.strip().split("/")
    if len(parts) == 2:
        return f"{parts[0]}/msg/{parts[1]}"
    return "/".join(parts)


def is_compressed(msgtype: str) -> bool:
    return normalize_type(msgtype) == "sensor_msgs/msg/CompressedImage"


def is_stamped_twist(msgtype: str) -> bool:
    return normalize_type(msgtype) == "geometry_msgs/msg/TwistStamped"


def absolute(topic: str) -> str:
    return topic if topic.startswith("/") else "/" + topic


@dataclass
class TopicMap:
    """Role -> absolute topic name. Build it with ``from_flags``; unmentioned roles keep the node's defaults."""

    topics: dict[str, str] = field(default_factory=lambda: {r: absolute(t) for r, t in NODE_TOPICS.items()})

    @classmethod
    def from_flags(cls, flags: list[str] | None) -> TopicMap:
        """Parse ``ROLE=TOPIC`` items (the CLI's repeatable ``--topic``)."""
        m = cls()
        for item in flags or []:
            role, sep, topic = item.partition("=")
            role, topic = role.strip(), topic.strip()
            if not sep or not topic:
                raise RoleError(f"--topic takes ROLE=TOPIC (roles: {', '.join(ROLES)}), got {item!r}")
            if role not in ROLES:
                close = difflib.get_close_matches(role, ROLES, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise RoleError(f"unknown role {role!r} in --topic {item!r} (roles: {', '.join(ROLES)}){hint}")
            m.topics[role] = absolute(topic)
        return m

    def __getitem__(self, role: str) -> str:
        return self.topics[role]

    def role_of(self, topic: str) -> str | None:
        for role, t in self.topics.items():
            if t == absolute(topic):
                return role
        return None

    def check_types(self, bag_types: dict[str, str]) -> dict[str, str]:
        """The (normalized) bag type of every mapped role present in ``bag_types`` (topic -> type); a topic whose
        type its role cannot take is a ``RoleError`` naming both."""
        found: dict[str, str] = {}
        for role, topic in self.topics.items():
            if topic not in bag_types:
                continue
            t = normalize_type(bag_types[topic])
            if t not in ROLE_TYPES[role]:
                raise RoleError(
                    f"topic {topic} (role {role}) has type {bag_types[topic]}; {role} takes "
                    f"{' or '.join(ROLE_TYPES[role])}. Map the role to another topic with "
                    f"--topic {role}=TOPIC"
                )
            found[role] = t
        return found


_HAND_WORDS = ("hand", "wrist", "gripper", "grip", "arm", "eef", "ee_")
_HEAD_WORDS = ("head", "front", "color", "rgb", "main", "top")
_TEXT = ("instr", "task", "prompt", "language", "goal_text", "command_text")


def propose_mapping(topics: dict[str, tuple[str, int]]) -> dict[str, str]:
    """A guess at role -> topic for a bag's ``topic -> (type, count)``, for ``inspect-bag`` to print.

    Cameras: a name with hand/wrist/gripper words is the hand camera, the busiest other camera the head; of a raw
    image and its ``/compressed`` twin the raw one is proposed. ``cmd_vel``: a Twist(Stamped) topic, preferring a name
    with ``cmd_vel``. ``instruction``: a String topic only when its name says so (instr, task, prompt, language).
    The node's default topic wins whenever it is present with a fitting type.
    """
    typed = {t: normalize_type(ty) for t, (ty, _) in topics.items()}
    count = {t: n for t, (_, n) in topics.items()}
    out: dict[str, str] = {}
    for role in ROLES:
        default = absolute(NODE_TOPICS[role])
        if typed.get(default) in ROLE_TYPES[role]:
            out[role] = default
    cams = [t for t, ty in typed.items() if ty in ROLE_TYPES["head"]]
    raw_names = {t for t in cams if typed[t] == "sensor_msgs/msg/Image"}
    cams = [t for t in cams if not (t.endswith("/compressed") and t[: -len("/compressed")] in raw_names)]
    hand = [t for t in cams if any(w in t.lower() for w in _HAND_WORDS)]
    head = [t for t in cams if t not in hand]
    if "hand" not in out and hand:
        out["hand"] = max(hand, key=lambda t: count[t])
    if "head" not in out and head:
        out["head"] = max(head, key=lambda t: (any(w in t.lower() for w in _HEAD_WORDS), count[t]))
    for role, words in (("joint_states", ("joint",)), ("cmd_vel", ("cmd_vel", "cmd"))):
        if role in out:
            continue
        fits = [t for t, ty in typed.items() if ty in ROLE_TYPES[role]]
        if fits:
            out[role] = max(fits, key=lambda t: (any(w in t.lower() for w in words), count[t]))
    if "instruction" not in out:  # a String topic is often something else (episode markers, status): by name only
        fits = [t for t, ty in typed.items() if ty in ROLE_TYPES["instruction"] and any(w in t.lower() for w in _TEXT)]
        if fits:
            out["instruction"] = max(fits, key=lambda t: count[t])
    return out
