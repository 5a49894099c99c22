"""Replay a rosbag2 into robovlm_node on simulated time and record what it commands.

    ros2 launch robovlm replay.launch.py bag:=/path/to/bag model_path:=/path/to/checkpoint out:=/tmp/replay_out

Without the ros2 CLI (pip installs), `robovlm replay BAG --model CKPT` does the same through rclpy.
"""

from launch.actions import DeclareLaunchArgument, ExecuteProcess, IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.substitutions import FindPackageShare

from launch import LaunchDescription


def generate_launch_description() -> LaunchDescription:
    bringup = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(
            PathJoinSubstitution([FindPackageShare("robovlm"), "launch", "bringup.launch.py"])
        ),
        launch_arguments={
            "model_path": LaunchConfiguration("model_path"),
            "instruction": LaunchConfiguration("instruction"),
            "use_sim_time": "true",
        }.items(),
    )
    play = ExecuteProcess(
        cmd=[
            "ros2",
            "bag",
            "play",
            LaunchConfiguration("bag"),
            "--clock",
            "--rate",
            LaunchConfiguration("rate"),
            "--topics",
            "/head_camera/image_raw",
            "/hand_camera/image_raw",
            "/joint_states",
            "/instruction",
        ],
        output="screen",
    )
    record = ExecuteProcess(
        cmd=["ros2", "bag", "record", "-o", LaunchConfiguration("out"), "/cmd_vel", "/diagnostics", "--use-sim-time"],
        output="screen",
    )
    return LaunchDescription(
        [
            DeclareLaunchArgument("bag", description="input rosbag2 directory"),
            DeclareLaunchArgument("model_path", description="checkpoint directory"),
            DeclareLaunchArgument("instruction", default_value="", description="language instruction"),
            DeclareLaunchArgument("rate", default_value="1.0", description="playback rate"),
            DeclareLaunchArgument("out", default_value="replay_out", description="output bag directory"),
            bringup,
            record,
            play,
        ]
    )
