"""The simulated robot as ROS topics plus the node, on sim time: the unchanged bringup drives the sim.

ros2 launch robovlm sim.launch.py model_path:=models/demo scenario:=1box_vert_left
"""

from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

from launch import LaunchDescription


def generate_launch_description() -> LaunchDescription:
    sim = Node(
        package="robovlm",
        executable="robovlm_sim",
        name="robovlm_sim",
        parameters=[
            {
                "scenario": ParameterValue(LaunchConfiguration("scenario"), value_type=str),
                "seed": ParameterValue(LaunchConfiguration("seed"), value_type=int),
                "perturb": ParameterValue(LaunchConfiguration("perturb"), value_type=str),
            }
        ],
        output="screen",
    )
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
    return LaunchDescription(
        [
            DeclareLaunchArgument("model_path", description="checkpoint directory (models/demo: the trained demo)"),
            DeclareLaunchArgument(
                "scenario", default_value="", description="one scenario id; empty: cycle through all 8"
            ),
            DeclareLaunchArgument("seed", default_value="900000", description="first layout seed"),
            DeclareLaunchArgument(
                "perturb", default_value="none", description="randomized rooms: none, mild or strong (sim/perturb.py)"
            ),
            DeclareLaunchArgument("instruction", default_value="", description="instruction (must match the scenario)"),
            sim,
            bringup,
        ]
    )
