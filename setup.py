"""ament_python hook: package metadata lives in pyproject.toml; this adds the files ROS 2 tools look for
(ament index marker, package.xml, launch files, parameter YAML) so `colcon build` + `ros2 launch robovlm ...` work."""

from glob import glob

from setuptools import setup

setup(
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/robovlm"]),
        ("share/robovlm", ["package.xml"]),
        ("share/robovlm/launch", glob("launch/*.launch.py")),
        ("share/robovlm/config", glob("config/*.yaml")),
    ],
)
