"""Start robovlm_node (a lifecycle node) and drive it to active.

    ros2 launch robovlm bringup.launch.py model_path:=/path/to/checkpoint instruction:="go to the cup"
    ros2 launch robovlm bringup.launch.py preset:=robot model_path:=/ckpt   # a physical robot (docs/robot.md)
    ros2 launch robovlm bringup.launch.py model_path:=/ckpt engine:=onnxruntime device:=cuda \
        head_camera_topic:=/camera/color/image_raw/compressed head_camera_compressed:=true

autostart:=true (default) lets the node configure and activate itself; autostart:=false has this launch file send
the configure transition, then activate once the node reports 'inactive' (a lifecycle manager's job).
engine, device, dtype and the camera arguments override params_file only when given (empty: the file's value), so
a parameter file's choice is never replaced by a launch default. preset:=robot loads config/robot.yaml after
params_file: operator enable required, TwistStamped into twist_mux's policy input (config/twist_mux.yaml).
"""

from launch.actions import DeclareLaunchArgument, EmitEvent, OpaqueFunction, RegisterEventHandler
from launch.conditions import UnlessCondition
from launch.events import matches_action
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode
from launch_ros.descriptions import ParameterValue
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from launch_ros.substitutions import FindPackageShare
from lifecycle_msgs.msg import Transition

from launch import LaunchDescription

OVERRIDES = {
    "engine": ("torch | onnxruntime", str),
    "device": ("cpu | cuda", str),
    "dtype": ("torch engine: float32 | bfloat16 | float16", str),
    "head_camera_topic": ("head camera topic (Image, or CompressedImage with head_camera_compressed)", str),
    "head_camera_compressed": ("true: the head camera topic is sensor_msgs/CompressedImage", bool),
    "hand_camera_topic": ("hand (gripper) camera topic", str),
    "hand_camera_compressed": ("true: the hand camera topic is sensor_msgs/CompressedImage", bool),
}
"""Launch arguments that override the parameter file when not empty: name -> (description, parameter type)."""


PRESETS = {"": "", "robot": "robot.yaml"}
"""preset:=NAME -> the parameter file loaded after params_file (config/NAME.yaml); empty: none."""


def _typed(name: str, text: str):
    if OVERRIDES[name][1] is bool:
        if text.lower() not in ("true", "false"):
            raise ValueError(f"launch argument {name} must be true or false, got {text!r}")
        return text.lower() == "true"
    return text


def _node_and_lifecycle(context):
    """The node with the given overrides, and (autostart:=false) the transitions that bring it to active."""
    overrides = {}
    for name in OVERRIDES:
        text = LaunchConfiguration(name).perform(context).strip()
        if text:
            overrides[name] = _typed(name, text)
    autostart = LaunchConfiguration("autostart")
    preset = LaunchConfiguration("preset").perform(context).strip()
    if preset not in PRESETS:
        raise ValueError(f"launch argument preset must be one of {sorted(PRESETS)}, got {preset!r}")
    preset_files = [PathJoinSubstitution([FindPackageShare("robovlm"), "config", PRESETS[preset]])] if preset else []
    node = LifecycleNode(
        package="robovlm",
        executable="robovlm_node",
        name="robovlm",
        namespace=LaunchConfiguration("namespace"),
        parameters=[
            LaunchConfiguration("params_file"),
            *preset_files,
            {
                "model_path": ParameterValue(LaunchConfiguration("model_path"), value_type=str),
                "instruction": ParameterValue(LaunchConfiguration("instruction"), value_type=str),
                "use_sim_time": ParameterValue(LaunchConfiguration("use_sim_time"), value_type=bool),
                "autostart": ParameterValue(autostart, value_type=bool),
                **overrides,
            },
        ],
        ros_arguments=["--log-level", LaunchConfiguration("log_level")],
        output="screen",
        emulate_tty=True,
    )
    configure = EmitEvent(
        event=ChangeState(lifecycle_node_matcher=matches_action(node), transition_id=Transition.TRANSITION_CONFIGURE),
        condition=UnlessCondition(autostart),
    )
    activate_when_inactive = RegisterEventHandler(
        OnStateTransition(
            target_lifecycle_node=node,
            start_state="configuring",
            goal_state="inactive",
            entities=[
                EmitEvent(
                    event=ChangeState(
                        lifecycle_node_matcher=matches_action(node), transition_id=Transition.TRANSITION_ACTIVATE
                    )
                )
            ],
        ),
        condition=UnlessCondition(autostart),
    )
    return [node, activate_when_inactive, configure]


def generate_launch_description() -> LaunchDescription:
    args = [
        DeclareLaunchArgument("model_path", default_value="", description="checkpoint directory"),
        DeclareLaunchArgument(
            "params_file",
            default_value=PathJoinSubstitution([FindPackageShare("robovlm"), "config", "robovlm.yaml"]),
            description="node parameter YAML",
        ),
        DeclareLaunchArgument(
            "preset", default_value="", description="robot: config/robot.yaml after params_file (docs/robot.md)"
        ),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node and its topics"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="use /clock (sim, rosbag --clock)"),
        DeclareLaunchArgument("instruction", default_value="", description="language instruction"),
        DeclareLaunchArgument("log_level", default_value="info", description="debug | info | warn | error"),
        DeclareLaunchArgument(
            "autostart",
            default_value="true",
            description="node configures and activates itself (false: this launch file does it)",
        ),
        *[
            DeclareLaunchArgument(name, default_value="", description=f"{text} (empty: params_file)")
            for name, (text, _) in OVERRIDES.items()
        ],
    ]
    return LaunchDescription([*args, OpaqueFunction(function=_node_and_lifecycle)])
