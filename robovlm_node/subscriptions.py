"""What the node subscribes to on configure, each topic handed to the part that owns its data: cameras, joint states
and the instruction to ``Inputs`` (cameras and joint states to the ``RolloutRecorder`` too), the operator's heartbeat
and deadman to ``OperatorEnable``, the operator's command to ``ShadowComparison`` and ``Takeover``, the takeover
button to ``Takeover``, ``~/outcome`` to the recorder. Cameras and the Joy take sensor QoS (best effort, like their
drivers); the instruction is latched; the heartbeat and the outcome reliable, so neither is lost to a dropped
sample."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from geometry_msgs.msg import Twist, TwistStamped
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image, JointState, Joy
from std_msgs.msg import Bool, String

from .convert import twist_fields
from .inputs import Inputs
from .operator_enable import OperatorEnable
from .recorder import RolloutRecorder
from .settings import Settings
from .shadow import ShadowComparison
from .status import NodeStatus
from .takeover import Takeover


def subscribe(
    node: Node,
    s: Settings,
    *,
    inputs: Inputs,
    enable: OperatorEnable,
    shadow: ShadowComparison | None,
    takeover: Takeover | None,
    recorder: RolloutRecorder | None,
    status: NodeStatus,
    uses_hand: bool,
    uses_state: bool,
) -> list[Any]:
    """Create the subscriptions; the node destroys them on cleanup."""
    subs = []
    sensor = qos_profile_sensor_data

    def camera(which: str) -> Callable[[Image | CompressedImage], None]:
        def on_camera(msg: Image | CompressedImage) -> None:
            inputs.on_camera(which, msg)
            if recorder is not None:
                recorder.on_camera(which, msg)

        return on_camera

    def on_joints(msg: JointState) -> None:
        inputs.on_joint_state(msg)
        if recorder is not None:
            recorder.on_joints(msg)

    cam = CompressedImage if s.head_camera_compressed else Image
    subs.append(node.create_subscription(cam, s.head_camera_topic, camera("head"), sensor))
    if uses_hand:
        cam = CompressedImage if s.hand_camera_compressed else Image
        subs.append(node.create_subscription(cam, s.hand_camera_topic, camera("hand"), sensor))
    if uses_state:
        subs.append(node.create_subscription(JointState, s.joint_states_topic, on_joints, sensor))
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)

    def on_instruction(msg: String) -> None:
        inputs.set_instruction(msg.data, source="topic")

    subs.append(node.create_subscription(String, s.instruction_topic, on_instruction, latched))
    if s.operator_cmd_topic:

        def on_operator(msg: Twist | TwistStamped) -> None:
            try:
                command = twist_fields(msg, s.action_fields)
            except ValueError as exc:
                status.count("bad_operator_cmd", f"{s.operator_cmd_topic}: {exc}")
                return
            if shadow is not None:
                shadow.on_operator(command)
            if takeover is not None:
                takeover.on_operator(command)

        kind = TwistStamped if s.operator_cmd_stamped else Twist
        subs.append(node.create_subscription(kind, s.operator_cmd_topic, on_operator, 10))
    reliable = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
    if s.require_enable:
        subs.append(node.create_subscription(Bool, s.enable_topic, lambda m: enable.on_heartbeat(m.data), reliable))
    joy_takeover = takeover is not None and s.takeover_joy_button >= 0
    if s.enable_joy_topic and (s.require_enable or joy_takeover):

        def on_joy(msg: Joy) -> None:
            buttons = list(msg.buttons)
            if s.require_enable:
                enable.on_joy(buttons)
            if joy_takeover and takeover is not None:
                takeover.on_joy(buttons)

        subs.append(node.create_subscription(Joy, s.enable_joy_topic, on_joy, sensor))
    if recorder is not None:

        def on_outcome(msg: String) -> None:
            error = recorder.on_outcome(msg.data)
            if error:
                status.count("bad_outcome", f"~/outcome: {error}")

        outcome_qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        subs.append(node.create_subscription(String, "~/outcome", on_outcome, outcome_qos))
    return subs
