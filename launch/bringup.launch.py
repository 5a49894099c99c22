"""Start robovlm_node (a lifecycle node) and drive it to active.

    ros2 launch robovlm bringup.launch.py model_path:=/path/to/checkpoint instruction:="go to the cup"

autostart:=true (default) lets the node configure and activate itself; autostart:=false has this launch file send
the configure transition, then activate once the node reports 'inactive' (a lifecycle manager's job).
"""

from launch.actions import DeclareLaunchArgument, EmitEvent, RegisterEventHandler
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


def generate_launch_description() -> LaunchDescription:
    args = [
        DeclareLaunchArgument("model_path", default_value="", description="checkpoint directory"),
        DeclareLaunchArgument(
            "params_file",
            default_value=PathJoinSubstitution([FindPackageShare("robovlm"), "config", "robovlm.yaml"]),
            description="node parameter YAML",
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
    ]
    autostart = LaunchConfiguration("autostart")
    node = LifecycleNode(
        package="robovlm",
        executable="robovlm_node",
        name="robovlm",
        namespace=LaunchConfiguration("namespace"),
        parameters=[
            LaunchConfiguration("params_file"),
            {
                "model_path": ParameterValue(LaunchConfiguration("model_path"), value_type=str),
                "instruction": ParameterValue(LaunchConfiguration("instruction"), value_type=str),
                "use_sim_time": ParameterValue(LaunchConfiguration("use_sim_time"), value_type=bool),
                "autostart": ParameterValue(autostart, value_type=bool),
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
    return LaunchDescription([*args, node, activate_when_inactive, configure])
