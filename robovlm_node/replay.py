"""Rosbag2 replay into the real node, over DDS, with the recorded timing; records what the node commands.

The bag's inputs (cameras, joint states, instruction) are published as the raw CDR bytes they were stored as;
the bag's own ``/cmd_vel`` (the teleop command) is never published, it is the reference for the error report.
Everything the node publishes on ``cmd_vel`` and ``/diagnostics`` is recorded (raw CDR again) into ``--out``.
"""

from __future__ import annotations

import importlib
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Twist
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.serialization import deserialize_message
from rosbags.rosbag2 import Writer

from robovlm.data.bag import TYPESTORE, deserialize, read_bag

from .node import RoboVLMNode

REFERENCE_TOPIC = "/cmd_vel"
NOT_REPLAYED = {"/cmd_vel", "/diagnostics", "/rosout", "/clock", "/parameter_events"}
REFERENCE_FIELDS = {"linear.x": ("linear", "x"), "linear.y": ("linear", "y"), "angular.z": ("angular", "z")}


class ReplayError(RuntimeError):
    """The replay could not run (bag, node configuration); the message says why."""


@dataclass
class ReplayReport:
    bag: str
    messages_played: int
    duration_s: float
    commands: int
    control_rate_hz: float
    inference_rate_hz: float
    latency_p50_ms: float
    latency_p99_ms: float
    faults: dict[str, int]
    mae: dict[str, float] = field(default_factory=dict)
    mae_samples: int = 0
    out: str | None = None

    def format(self) -> str:
        lines = [
            f"replayed {self.messages_played} messages from {self.bag} over {self.duration_s:.1f} s",
            f"commands published: {self.commands}",
            f"achieved control rate: {self.control_rate_hz:.1f} Hz",
            f"inference: {self.inference_rate_hz:.1f} Hz, latency p50 {self.latency_p50_ms:.1f} ms, "
            f"p99 {self.latency_p99_ms:.1f} ms",
            "faults: " + (", ".join(f"{k}={v}" for k, v in sorted(self.faults.items())) or "none"),
        ]
        if self.mae:
            lines.append(f"MAE vs recorded cmd_vel ({self.mae_samples} commands): "
                         + ", ".join(f"{k} {v:.4f}" for k, v in self.mae.items()))
        else:
            lines.append("MAE: the bag holds no recorded /cmd_vel")
        if self.out:
            lines.append(f"recorded cmd_vel and /diagnostics to {self.out}")
        return "\n".join(lines)


def _msg_class(msgtype: str):
    pkg, _, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{pkg}.msg"), name)


def _qos_for(msgtype: str, topic: str) -> QoSProfile:
    if msgtype in ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage", "sensor_msgs/msg/JointState"):
        return qos_profile_sensor_data
    if topic.endswith("instruction"):
        return QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    return QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


def replay(bag: str | Path, model: str | Path, *, rate: float = 1.0, out: str | Path | None = None,
           instruction: str | None = None, params: dict | None = None) -> ReplayReport:
    if not rate > 0:
        raise ReplayError(f"rate must be > 0, got {rate}")
    if out is not None and Path(out).exists():
        raise ReplayError(f"{out} already exists; choose a new output bag directory")
    messages = read_bag(bag)
    inputs = [m for m in messages if m.topic not in NOT_REPLAYED]
    if not inputs:
        raise ReplayError(f"{bag}: no input messages (topics: {sorted({m.topic for m in messages})})")
    reference = [(m.timestamp_ns, deserialize(m)) for m in messages if m.topic == REFERENCE_TOPIC]

    context = Context()
    rclpy.init(context=context)
    overrides = {"model_path": str(model), **(params or {})}
    if instruction:
        overrides["instruction"] = instruction
    node = RoboVLMNode(context=context, parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()])
    player = Node("robovlm_replay", context=context)
    recorded: list[tuple[float, str, bytes]] = []
    lock = threading.Lock()

    def record(topic: str):
        def cb(data: bytes) -> None:
            with lock:
                recorded.append((time.monotonic(), topic, data))
        return cb

    executor = SingleThreadedExecutor(context=context)
    spinner = None
    try:
        if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            raise ReplayError("the node failed to configure (see its error above)")
        s = node.settings
        player.create_subscription(Twist, s.cmd_vel_topic, record("/cmd_vel"),
                                   QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE), raw=True)
        player.create_subscription(DiagnosticArray, "/diagnostics", record("/diagnostics"), 10, raw=True)
        pubs = {}
        for m in inputs:
            if m.topic not in pubs:
                pubs[m.topic] = player.create_publisher(_msg_class(m.msgtype), m.topic, _qos_for(m.msgtype, m.topic))
        executor.add_node(node)
        executor.add_node(player)
        spinner = threading.Thread(target=executor.spin, daemon=True)
        spinner.start()
        if node.trigger_activate() != TransitionCallbackReturn.SUCCESS:
            raise ReplayError("the node failed to activate")
        deadline = time.monotonic() + 10.0  # wait for DDS discovery both ways
        while time.monotonic() < deadline and not (all(p.get_subscription_count() > 0 for p in pubs.values())
                                                   and player.count_publishers(s.cmd_vel_topic) > 0):
            time.sleep(0.05)

        t_bag0 = inputs[0].timestamp_ns
        t_wall0 = time.monotonic()
        for m in inputs:
            delay = t_wall0 + (m.timestamp_ns - t_bag0) * 1e-9 / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            pubs[m.topic].publish(m.data)
        t_end = time.monotonic()
        time.sleep(min(s.input_timeout_s, 0.5))  # let the last frame's commands out
        latency = node._infer_events
        report = ReplayReport(
            bag=str(bag), messages_played=len(inputs), duration_s=t_end - t_wall0, commands=0,
            control_rate_hz=0.0, inference_rate_hz=len(latency) / max(t_end - t_wall0, 1e-9),
            latency_p50_ms=latency.percentile(50) * 1e3, latency_p99_ms=latency.percentile(99) * 1e3,
            faults={**node.faults, **{f"safety_{k}": v for k, v in node.safety.counts.items()}})
        node.trigger_deactivate()  # zero as the last command
        time.sleep(0.2)
    finally:
        executor.shutdown()
        if spinner is not None:
            spinner.join(timeout=5.0)
        node.destroy_node()
        player.destroy_node()
        rclpy.try_shutdown(context=context)

    with lock:
        rec = list(recorded)
    commands = [(t, deserialize_message(d, Twist)) for t, topic, d in rec if topic == "/cmd_vel"]
    during = [(t, c) for t, c in commands if t_wall0 <= t <= t_end]
    report.commands = len(commands)
    report.control_rate_hz = len(during) / max(t_end - t_wall0, 1e-9)
    if reference and during:
        ref_t = np.array([t for t, _ in reference])
        errs: dict[str, list[float]] = {f: [] for f in s.action_fields if f in REFERENCE_FIELDS}
        for t, cmd in during:
            tb = t_bag0 + (t - t_wall0) * rate * 1e9
            i = int(np.searchsorted(ref_t, tb, side="right")) - 1
            if i < 0:
                continue
            ref = reference[i][1]
            for f in errs:
                part, axis = REFERENCE_FIELDS[f]
                errs[f].append(abs(getattr(getattr(cmd, part), axis) - getattr(getattr(ref, part), axis)))
        report.mae = {f: float(np.mean(v)) for f, v in errs.items() if v}
        report.mae_samples = max((len(v) for v in errs.values()), default=0)
    if out is not None:
        _write_recording(out, rec, t_bag0, t_wall0, rate)
        report.out = str(out)
    return report


def _write_recording(out: str | Path, rec: list[tuple[float, str, bytes]], t_bag0: int, t_wall0: float,
                     rate: float) -> None:
    """Write the recorded messages on the input bag's timeline (so both bags line up in a viewer)."""
    types = {"/cmd_vel": "geometry_msgs/msg/Twist", "/diagnostics": "diagnostic_msgs/msg/DiagnosticArray"}
    with Writer(Path(out), version=9) as w:
        conns = {topic: w.add_connection(topic, msgtype, typestore=TYPESTORE) for topic, msgtype in types.items()}
        for t, topic, data in sorted(rec, key=lambda r: r[0]):
            w.write(conns[topic], int(t_bag0 + (t - t_wall0) * rate * 1e9), data)

