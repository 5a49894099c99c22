"""Replay a rosbag2 into robovlm_node on simulated time and record what it commands: runs ``robovlm replay``, so
the role mapping, message types, instruction sources and report are those of the command line.

    ros2 launch robovlm replay.launch.py bag:=/path/to/bag model_path:=/path/to/checkpoint out:=/tmp/replay_out
    ros2 launch robovlm replay.launch.py bag:=/data/robot_day model_path:=/ckpt \
        head:=/camera/color/image_raw/compressed hand:=/wrist_camera/image_raw cmd_vel:=/teleop/cmd_vel \
        instructions:=/data/instructions.csv

Role arguments (head, hand, joint_states, cmd_vel, instruction_topic) are the bag's topics, as
``robovlm replay --topic ROLE=TOPIC``; empty keeps the node's default topic. ``robovlm inspect-bag BAG`` proposes them.
"""

from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction
from launch.substitutions import LaunchConfiguration

from launch import LaunchDescription

ROLES = {
    "head": "head",
    "hand": "hand",
    "joint_states": "joint_states",
    "cmd_vel": "cmd_vel",
    "instruction_topic": "instruction",
}
"""Launch argument -> role of ``robovlm replay --topic ROLE=TOPIC``."""


def _replay(context):
    """``robovlm replay`` with the flags of the non-empty arguments."""

    def arg(name: str) -> str:
        return LaunchConfiguration(name).perform(context).strip()

    cmd = ["robovlm", "replay", arg("bag"), "--model", arg("model_path"), "--rate", arg("rate")]
    if arg("out"):
        cmd += ["--out", arg("out")]
    for name, role in ROLES.items():
        if arg(name):
            cmd += ["--topic", f"{role}={arg(name)}"]
    if arg("instruction"):
        cmd += ["--instruction", arg("instruction")]
    if arg("instructions"):
        cmd += ["--instructions", arg("instructions")]
    return [ExecuteProcess(cmd=cmd, output="screen")]


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription(
        [
            DeclareLaunchArgument("bag", description="input rosbag2 directory"),
            DeclareLaunchArgument("model_path", description="checkpoint directory"),
            DeclareLaunchArgument("rate", default_value="1.0", description="playback rate"),
            DeclareLaunchArgument("out", default_value="replay_out", description="output bag directory"),
            *[
                DeclareLaunchArgument(name, default_value="", description=f"the bag's {role} topic")
                for name, role in ROLES.items()
            ],
            DeclareLaunchArgument("instruction", default_value="", description="instruction for the whole bag"),
            DeclareLaunchArgument(
                "instructions", default_value="", description="instructions file (YAML or CSV, per episode)"
            ),
            OpaqueFunction(function=_replay),
        ]
    )
