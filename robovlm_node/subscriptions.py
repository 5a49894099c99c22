"""What the node subscribes to on configure, each topic handed to the part that owns its data: cameras, joint states
and the instruction to ``Inputs``, the operator's heartbeat and deadman to ``OperatorEnable``, the operator's
command to ``ShadowComparison``. Cameras and the deadman take sensor QoS (best effort, like their drivers); the
instruction is latched; the heartbeat reliable, so a grant is never lost to a dropped sample."""

from __future__ import annotations

from typing import Any

from geometry_msgs.msg import Twist, TwistStamped
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image, JointState, Joy
from std_msgs.msg import Bool, String

from .convert import twist_fields
from .inputs import Inputs
from .operator_enable import OperatorEnable
from .settings import Settings
from .shadow import ShadowComparison
from .status import NodeStatus


def subscribe(
    node: Node,
    s: Settings,
    *,
    inputs: Inputs,
    enable: OperatorEnable,
    shadow: ShadowComparison | None,
    status: NodeStatus,
    uses_hand: bool,
    uses_state: bool,
) -> list[Any]:
    """Create the subscriptions; the node destroys them on cleanup."""
    subs = []
    sensor = qos_profile_sensor_data
    cam = CompressedImage if s.head_camera_compressed else Image
    subs.append(node.create_subscription(cam, s.head_camera_topic, lambda m: inputs.on_camera("head", m), sensor))
    if uses_hand:
        cam = CompressedImage if s.hand_camera_compressed else Image
        subs.append(node.create_subscription(cam, s.hand_camera_topic, lambda m: inputs.on_camera("hand", m), sensor))
    if uses_state:
        subs.append(node.create_subscription(JointState, s.joint_states_topic, inputs.on_joint_state, sensor))
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)

    def on_instruction(msg: String) -> None:
        inputs.set_instruction(msg.data, source="topic")

    subs.append(node.create_subscription(String, s.instruction_topic, on_instruction, latched))
    if shadow is not None:

        def on_operator(msg: Twist | TwistStamped) -> None:
            try:
                shadow.on_operator(twist_fields(msg, s.action_fields))
            except ValueError as exc:
                status.count("bad_operator_cmd", f"{s.operator_cmd_topic}: {exc}")

        kind = TwistStamped if s.operator_cmd_stamped else Twist
        subs.append(node.create_subscription(kind, s.operator_cmd_topic, on_operator, 10))
    if s.require_enable:
        reliable = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
        subs.append(node.create_subscription(Bool, s.enable_topic, lambda m: enable.on_heartbeat(m.data), reliable))
        if s.enable_joy_topic:
            on_joy = lambda m: enable.on_joy(list(m.buttons))  # noqa: E731
            subs.append(node.create_subscription(Joy, s.enable_joy_topic, on_joy, sensor))
    return subs
