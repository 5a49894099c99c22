"""Static checks of the ROS 2 packaging: CI cannot import launch/launch_ros, so the launch files are checked as
source here (they were run against the real launch sources by hand; see the closing note of issue 4)."""

import ast
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import yaml

from robovlm.data.roles import ROLES
from robovlm_node.parameters import PARAMETERS, validate_settings
from tests import ROOT


def _launch_args(path: Path) -> list[str]:
    """Launch arguments a launch file declares: literal names, and the keys of a module-level dict its
    comprehensions declare them from (``OVERRIDES``, ``ROLES``)."""
    tree = ast.parse(path.read_text())
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "DeclareLaunchArgument":
            if isinstance(node.args[0], ast.Constant):
                names.append(node.args[0].value)
    return names + list(_module_dict(path, "OVERRIDES")) + list(_module_dict(path, "ROLES"))


def _module_dict(path: Path, name: str) -> dict:
    """Keys (and literal values) of a module-level dict ``name`` of a launch file, or {}."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == name:
            return {
                k.value: (v.value if isinstance(v, ast.Constant) else None)
                for k, v in zip(node.value.keys, node.value.values)
            }
    return {}


def test_bringup_declares_the_documented_arguments_and_starts_our_executable():
    src = (ROOT / "launch" / "bringup.launch.py").read_text()
    compile(src, "bringup.launch.py", "exec")
    assert set(_launch_args(ROOT / "launch" / "bringup.launch.py")) == {
        "model_path",
        "params_file",
        "preset",
        "namespace",
        "use_sim_time",
        "instruction",
        "log_level",
        "autostart",
        "engine",
        "device",
        "dtype",
        "head_camera_topic",
        "head_camera_compressed",
        "hand_camera_topic",
        "hand_camera_compressed",
    }
    assert set(_module_dict(ROOT / "launch" / "bringup.launch.py", "OVERRIDES")) <= set(PARAMETERS)  # node params
    assert 'package="robovlm"' in src and 'executable="robovlm_node"' in src and "LifecycleNode(" in src
    assert "TRANSITION_CONFIGURE" in src and "TRANSITION_ACTIVATE" in src
    assert '"robovlm_node = robovlm_node.process:main"' in (ROOT / "setup.py").read_text()


def test_replay_launch_runs_robovlm_replay_with_the_same_role_mapping():
    """replay.launch.py runs ``robovlm replay`` (which publishes /clock from the bag and runs the node on sim time)
    with one ``--topic ROLE=TOPIC`` per given role argument, and the instruction flags."""
    path = ROOT / "launch" / "replay.launch.py"
    src = path.read_text()
    compile(src, "replay.launch.py", "exec")
    assert {"bag", "model_path", "out", "rate", "instruction", "instructions"} <= set(_launch_args(path))
    assert set(_module_dict(path, "ROLES").values()) == set(ROLES)
    assert '["robovlm", "replay"' in src and '"--topic", f"{role}={arg(name)}"' in src
    assert '"--instructions"' in src and '"--instruction"' in src


def test_params_yaml_is_valid_for_the_node():
    data = yaml.safe_load((ROOT / "config" / "robovlm.yaml").read_text())
    params = data["/**"]["ros__parameters"]
    assert set(params) <= set(PARAMETERS), set(params) - set(PARAMETERS)
    raw = {k: spec.default for k, spec in PARAMETERS.items()}
    raw.update(params)
    raw["model_path"] = "/some/checkpoint"
    s = validate_settings(raw)
    assert s.max_velocity == [0.3, 0.3] and s.chunk_mode == "ensemble"


def test_every_imported_ros_package_is_an_exec_depend():
    """A ROS install resolves what package.xml names: every ROS package the node and launch files import is there."""
    deps = {e.text for e in ET.parse(ROOT / "package.xml").getroot().iter("exec_depend")}
    ros_like = re.compile(r"^\s*(?:from|import) ([a-z0-9_]+)", re.M)
    imported = set()
    for path in [*(ROOT / "robovlm_node").glob("*.py"), *(ROOT / "launch").glob("*.py")]:
        imported |= set(ros_like.findall(path.read_text()))
    ros = {
        m
        for m in imported
        if m.endswith(("_msgs", "_interfaces")) or m in ("rclpy", "launch", "launch_ros", "ament_index_python")
    }
    assert ros and ros <= deps, ros - deps


def test_package_xml_and_ament_data_files():
    root = ET.parse(ROOT / "package.xml").getroot()
    assert root.get("format") == "3" and root.findtext("name") == "robovlm"
    assert root.find("export/build_type").text == "ament_python"
    deps = {e.text for e in root.iter("exec_depend")}
    assert {"rclpy", "launch_ros", "sensor_msgs", "geometry_msgs", "lifecycle_msgs", "rosgraph_msgs"} <= deps
    assert {
        "python3-torch",
        "python3-transformers-pip",
        "python3-numpy",
        "python3-yaml",
        "python3-h5py",
        "python3-opencv",
        "python3-rosbags-pip",
    } <= deps
    setup = (ROOT / "setup.py").read_text()
    for needle in (
        "share/ament_index/resource_index/packages",
        "launch/*.launch.py",
        "config/*.yaml",
        'tree("models")',
    ):
        assert needle in setup
    assert (ROOT / "resource" / "robovlm").exists()
    assert (ROOT / "ros2_ws" / "src" / "robovlm" / "package.xml").exists()  # colcon workspace links the package
    assert "install_scripts=$base/lib/robovlm" in (ROOT / "setup.cfg").read_text()


def test_the_robot_preset_is_valid_and_feeds_twist_muxs_policy_input_below_teleop():
    """config/robot.yaml over config/robovlm.yaml gives valid settings with the operator required; config/twist_mux.yaml
    has twist_mux's documented layout (``topics``/``locks`` of ``topic``, ``timeout``, ``priority`` in 0-255), teleop
    above the policy, the policy on the preset's cmd_vel topic, and a stop lock that blocks the policy, not teleop."""
    base = yaml.safe_load((ROOT / "config" / "robovlm.yaml").read_text())["/**"]["ros__parameters"]
    preset = yaml.safe_load((ROOT / "config" / "robot.yaml").read_text())["/**"]["ros__parameters"]
    assert set(preset) <= set(PARAMETERS), set(preset) - set(PARAMETERS)
    raw = {k: spec.default for k, spec in PARAMETERS.items()} | base | preset | {"model_path": "/some/checkpoint"}
    s = validate_settings(raw)
    assert s.require_enable and s.stamped and s.disabled_output == "silent"
    mux = yaml.safe_load((ROOT / "config" / "twist_mux.yaml").read_text())["twist_mux"]["ros__parameters"]
    assert mux["use_stamped"] is s.stamped
    for group in ("topics", "locks"):
        for name, entry in mux[group].items():
            assert set(entry) == {"topic", "timeout", "priority"}, (group, name, entry)
            assert isinstance(entry["topic"], str) and entry["timeout"] >= 0 and 0 <= entry["priority"] <= 255
    topics, locks = mux["topics"], mux["locks"]
    assert topics["policy"]["topic"] == s.cmd_vel_topic
    assert topics["teleop"]["priority"] > topics["policy"]["priority"]
    stop = locks["stop_policy"]
    assert topics["policy"]["priority"] < stop["priority"] <= topics["teleop"]["priority"]  # blocks only the policy
    assert topics["policy"]["timeout"] >= s.enable_timeout_s, "twist_mux must not drop the policy between its commands"


def test_the_bringup_launch_file_loads_the_robot_preset_after_the_parameter_file():
    path = ROOT / "launch" / "bringup.launch.py"
    assert _module_dict(path, "PRESETS") == {"": "", "robot": "robot.yaml"}
    src = path.read_text()
    assert src.index('LaunchConfiguration("params_file"),') < src.index("*preset_files,")
