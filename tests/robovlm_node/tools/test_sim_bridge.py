"""The unchanged node drives the simulated robot over DDS, on sim time."""

import threading
import time
from contextlib import contextmanager

import numpy as np
import pytest
import rclpy
import torch
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image

from robovlm.configs.model import load_config
from robovlm.data.stats import NormStats
from robovlm.model.policy import RoboVLM
from robovlm.sim.latency import LatencySettings, SlowedEngine
from robovlm_node.node import RoboVLMNode
from robovlm_node.tools.demo import bringup_command
from robovlm_node.tools.sim_bridge import SimBridge
from robovlm_node.tools.sim_node import split_args

pytestmark = pytest.mark.dds


@pytest.fixture(scope="module")
def demo_shaped_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = RoboVLM(load_config("models/configs/demo.json"))
    path = tmp_path_factory.mktemp("demo_ckpt")
    model.save_pretrained(
        path,
        stats=NormStats(
            state_mean=[0.0, 0.0],
            state_std=[0.1, 0.1],
            action_low=[-0.4, -0.4],
            action_high=[0.4, 0.4],
            joint_names=["arm_pan", "arm_lift"],
        ),
    )
    return path


def sim_node(context: Context, checkpoint, **kwargs) -> RoboVLMNode:
    """The node on sim time with its engine in this process, driving around the box on the left."""
    return RoboVLMNode(
        context=context,
        parameter_overrides=[
            Parameter("model_path", value=str(checkpoint)),
            Parameter("use_sim_time", value=True),
            Parameter("instruction", value="go around the box on the left and stop at the cup"),
            Parameter("engine_process", value=False),
        ],
        **kwargs,
    )


@contextmanager
def spinning(context: Context, *nodes):
    """``nodes`` spinning on one executor; on exit the executor stops, the nodes are destroyed and the context
    shut down."""
    executor = SingleThreadedExecutor(context=context)
    for n in nodes:
        executor.add_node(n)
    spin = threading.Thread(target=executor.spin, daemon=True)
    spin.start()
    try:
        yield
    finally:
        executor.shutdown()
        spin.join(timeout=5)
        for n in nodes:
            n.destroy_node()
        rclpy.try_shutdown(context=context)


def test_node_drives_the_sim_over_dds_on_sim_time(demo_shaped_checkpoint):
    context = Context()
    rclpy.init(context=context)
    node = sim_node(context, demo_shaped_checkpoint)
    bridge = SimBridge(context=context, image_size=56)
    bridge.env.time_limit_s = 3.0
    with spinning(context, node, bridge):
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        time.sleep(0.5)  # discovery
        out = bridge.run_episode("1box_vert_left", 5)
        assert out.time_s >= 3.0 - 1e-6 or out.success or out.collision
        assert len(out.frames) >= 25
        # commands arrive at about 20 Hz of sim time, and the node's clock is the sim clock
        assert len(out.commands) >= 0.5 * 20 * out.time_s, len(out.commands)
        assert node.now() < 100.0  # sim time (starts at 1 s), not the wall clock
        assert max(abs(c[1]) for c in out.commands) <= 0.5 + 1e-9  # the node's default max_velocity
        assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
        time.sleep(0.3)
        assert node.output is not None and np.all(node.output.last_command == 0)
        second = bridge.run_episode("2box_hori_right", 6)  # the sim clock keeps going forward across episodes
        assert second.time_s > 0 and bridge.sim_time() > out.time_s


def test_demo_starts_the_node_like_bringup(tmp_path):
    cmd = bringup_command(tmp_path, params_file=tmp_path / "p.yaml", use_sim_time=True)
    assert cmd[1:3] == ["-m", "robovlm_node.process"] and "--ros-args" in cmd
    assert f"model_path:={tmp_path}" in cmd and "use_sim_time:=true" in cmd and "__node:=robovlm" in cmd
    slow = bringup_command(
        tmp_path, params_file=tmp_path / "p.yaml", use_sim_time=True, latency=LatencySettings(inference_ms=300)
    )
    assert slow[1:5] == ["-m", "robovlm_node.tools.sim_node", "--inference-latency-ms", "300"]
    assert slow[slow.index("--ros-args") :] == cmd[cmd.index("--ros-args") :]  # the same node, params and overrides


def test_sim_node_passes_the_ros_arguments_through():
    assert split_args(["--inference-latency-ms", "300", "--ros-args", "-p", "x:=1"]) == (
        ["--inference-latency-ms", "300"],
        ["--ros-args", "-p", "x:=1"],
    )
    assert split_args(["--inference-latency-ms", "300"]) == (["--inference-latency-ms", "300"], [])


@pytest.mark.slow
def test_the_demo_latency_delays_camera_frames_and_the_models_answers(demo_shaped_checkpoint):
    """``make demo LATENCY_MS=300 CAMERA_LATENCY_MS=100``: the bridge delivers each camera frame 100 ms of sim time
    after its capture, stamped with the capture time; the node's engine answers 300 ms after it starts; the node
    still drives."""
    context = Context()
    rclpy.init(context=context)
    node = sim_node(
        context,
        demo_shaped_checkpoint,
        engine_wrapper=lambda e: SlowedEngine(e, LatencySettings(inference_ms=300), rng=np.random.default_rng(0)),
    )
    bridge = SimBridge(context=context, image_size=56, camera_latency_ms=100)
    bridge.env.time_limit_s = 3.0
    ages: list[float] = []
    listener = rclpy.create_node("frame_ages", context=context)
    listener.create_subscription(
        Image,
        "head_camera/image_raw",
        lambda m: ages.append(bridge.sim_time() + 1.0 - (m.header.stamp.sec + m.header.stamp.nanosec * 1e-9)),
        qos_profile_sensor_data,
    )
    with spinning(context, node, bridge, listener):
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        time.sleep(0.5)  # discovery
        out = bridge.run_episode("1box_vert_left", 5)
        assert len(ages) >= 20 and min(ages) >= 0.1 - 1e-6, ages[:5]
        engine = node.supervisor.engine
        assert isinstance(engine, SlowedEngine) and len(engine.delays) >= 3
        assert all(d > 0.2 for d in engine.delays[1:]), engine.delays[:5]  # the demo model itself takes ms
        assert len(out.commands) >= 0.5 * 20 * out.time_s, len(out.commands)  # the control loop keeps its rate
        assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
