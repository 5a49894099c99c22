"""Rosbag2 replay into the real node, over DDS, on the bag's own time; records what the node commands.
(Just over 400 lines: the player, the clock, the recorder thread and the report belong to one run.)

Roles, not topics (``robovlm.data.roles``): the bag's topic for each role is configured on the node (topic
parameters; ``Image`` or ``CompressedImage`` read from the bag), and only those topics are played, as the raw CDR
bytes they were stored as; every other topic (``/tf``, a second camera...) is skipped and listed once. The bag's
``cmd_vel`` (teleop, ``Twist`` or ``TwistStamped``) is never played: it is the reference for the error report.
``/clock`` is published from the bag's receive times with the node on ``use_sim_time``, so its timeouts, rates and
latencies are in bag time. Messages are streamed: memory stays flat in bag length. What the node publishes on
``cmd_vel`` and ``/diagnostics`` is written, on the bag's timeline, to ``out`` as it arrives.
"""

from __future__ import annotations

import importlib
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Twist, TwistStamped
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.serialization import deserialize_message
from rosbags.rosbag2 import Writer
from rosgraph_msgs.msg import Clock

from robovlm.configs.model import load_config
from robovlm.data.bag import TYPESTORE, BagError, bag_instruction, bag_topics, iter_bag, twist_values
from robovlm.data.errors import EpisodeError
from robovlm.data.instructions import InstructionSources
from robovlm.data.roles import RoleError, TopicMap, is_compressed
from robovlm.model.policy import CheckpointError
from robovlm.runtime.agreement import FieldAgreement, agreement

from ..node import RoboVLMNode
from ..parameters import ParameterError
from ..status import STOP_CAUSES

log = logging.getLogger(__name__)

REFERENCE_FIELDS = {"linear.x": 0, "linear.y": 1, "angular.z": 2}
CLOCK_PERIOD_S = 0.01  # wall seconds between /clock messages (ros2 bag play --clock publishes at 40 Hz)
DISCOVERY_TIMEOUT_S = 15.0


class ReplayError(RuntimeError):
    """The replay could not run (bag, roles, node configuration); the message says why."""


@dataclass
class ReplayReport:
    bag: str
    messages_played: int
    skipped_topics: list[str]
    duration_s: float
    """Bag time played."""
    commands: int
    control_rate_hz: float
    """Commands per second of bag time."""
    inferences: int
    inference_rate_hz: float
    latency_p50_ms: float
    latency_p99_ms: float
    camera_to_command_p50_ms: float
    control_ticks: int
    stopped: dict[str, float]
    """Fraction of control ticks stopped, per cause."""
    faults: dict[str, int]
    agreement: dict[str, FieldAgreement] = field(default_factory=dict)
    """Per field, against the recorded teleop (``robovlm.runtime.agreement``: the figures shadow mode reports)."""
    mae_samples: int = 0
    out: str | None = None
    instruction: str = ""
    """The instruction and where it came from (``robovlm.data.instructions``)."""

    @property
    def mae(self) -> dict[str, float]:
        """Mean absolute error per field against the recorded teleop."""
        return {k: a.mae for k, a in self.agreement.items()}

    def format(self) -> str:
        lines = [
            f"replayed {self.messages_played} messages from {self.bag} over {self.duration_s:.1f} s of bag time",
            f"instruction: {self.instruction}",
            "skipped topics (no role): " + (", ".join(self.skipped_topics) or "none"),
            f"commands published: {self.commands}",
            f"achieved control rate: {self.control_rate_hz:.1f} Hz (bag time)",
            f"inference: {self.inferences} steps, {self.inference_rate_hz:.1f} Hz, latency p50 "
            f"{self.latency_p50_ms:.1f} ms, p99 {self.latency_p99_ms:.1f} ms; camera to command p50 "
            f"{self.camera_to_command_p50_ms:.1f} ms",
            f"control ticks: {self.control_ticks}; stopped: "
            + (", ".join(f"{k} {v:.1%}" for k, v in self.stopped.items() if v > 0) or "never"),
            "faults: " + (", ".join(f"{k}={v}" for k, v in sorted(self.faults.items())) or "none"),
        ]
        if self.mae:
            lines.append(
                f"MAE vs recorded cmd_vel ({self.mae_samples} commands): "
                + ", ".join(f"{k} {v:.4f}" for k, v in self.mae.items())
            )
            lines += [f"agreement with recorded cmd_vel, {k}: {a.format()}" for k, a in self.agreement.items()]
        else:
            lines.append("MAE: the bag holds no recorded cmd_vel")
        if self.out:
            lines.append(f"recorded cmd_vel and /diagnostics to {self.out}")
        return "\n".join(lines)


def _msg_class(msgtype: str):
    pkg, _, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{pkg}.msg"), name)


def _plan(bag: Path, model: Path, topics: TopicMap, instruction: str | None) -> tuple[dict, dict, list[str], dict]:
    """Check the bag against the model's needs before any ROS starts: (role -> topic played, node parameters,
    topics skipped, topic -> message type). A required role without messages is a ``ReplayError`` naming it."""
    try:
        info = bag_topics(bag)
        found = topics.check_types({t: i.msgtype for t, i in info.items()})
        cfg = load_config(model)
    except (BagError, RoleError, CheckpointError, FileNotFoundError, ValueError) as exc:
        raise ReplayError(str(exc)) from exc
    has = {role: role in found and info[topics[role]].count > 0 for role in topics.topics}
    required = ["head"] + (["joint_states"] if cfg.use_state else [])  # the instruction is checked by the caller
    missing = [r for r in required if not has[r]]
    if missing:
        listing = ", ".join(f"{t} ({i.msgtype}, {i.count})" for t, i in sorted(info.items()))
        raise ReplayError(
            f"{bag}: no messages for required role(s) "
            + ", ".join(f"{r} ({topics[r]})" for r in missing)
            + f"; the bag has: {listing}. Map them with --topic ROLE=TOPIC (robovlm inspect-bag "
            f"{bag} proposes a mapping)"
        )
    played = {r: topics[r] for r in ("head", "hand", "joint_states", "instruction") if has[r]}
    if not cfg.use_hand_rgb:
        played.pop("hand", None)
    if not cfg.use_state:
        played.pop("joint_states", None)
    if instruction:  # --instruction overrides the bag's own
        played.pop("instruction", None)
    if cfg.use_hand_rgb and "hand" not in played:
        log.warning("%s: no hand camera on %s; the model runs on its missing-hand marker", bag, topics["hand"])
    params = {
        "head_camera_topic": topics["head"],
        "head_camera_compressed": is_compressed(found["head"]),
        "hand_camera_topic": topics["hand"],
        "hand_camera_compressed": "hand" in found and is_compressed(found["hand"]),
        "joint_states_topic": topics["joint_states"],
        "instruction_topic": topics["instruction"],
    }
    reference = topics["cmd_vel"] if has["cmd_vel"] else None
    skipped = sorted(t for t in info if t not in played.values() and t != reference)
    if reference:
        played["cmd_vel"] = reference
    return played, params, skipped, {t: i.msgtype for t, i in info.items()}


def _qos(role: str) -> QoSProfile:
    if role == "instruction":
        return QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    return qos_profile_sensor_data


def replay(
    bag: str | Path,
    model: str | Path,
    *,
    topics: TopicMap | None = None,
    rate: float = 1.0,
    out: str | Path | None = None,
    instruction: str | None = None,
    instructions: InstructionSources | None = None,
    params: dict | None = None,
) -> ReplayReport:
    """Replay ``bag`` into the node running ``model``. The instruction: the bag's instruction topic (played as
    recorded), else ``instructions`` (an ``--instructions`` file), ``instruction`` (or ``-p instruction:=``), the
    bag's ``custom_data``, the scenario mapping, in that order."""
    bag, model, topics = Path(bag), Path(model), topics or TopicMap()
    if not rate > 0:
        raise ReplayError(f"rate must be > 0, got {rate}")
    if out is not None and Path(out).exists():
        raise ReplayError(f"{out} already exists; choose a new output bag directory")
    found, missing = None, None
    try:
        text = instruction or (params or {}).get("instruction") or None
        sources = InstructionSources(file=instructions.file if instructions else None, text=text)
        found = bag_instruction(bag, topics, sources)
    except EpisodeError as exc:  # reported after the roles: a bag without a head camera says so first
        missing = exc
    except BagError as exc:
        raise ReplayError(str(exc)) from exc
    instruction = None if found is None or found.source.startswith("topic ") else found.text  # a topic is played
    played, topic_params, skipped, types = _plan(bag, model, topics, instruction)
    if found is None:
        raise ReplayError(str(missing))
    if skipped:
        log.info("skipping topics that no role maps to: %s", ", ".join(skipped))
    reference_topic = played.pop("cmd_vel", None)

    context = Context()
    rclpy.init(context=context, args=[])  # rcl must not see this CLI's own arguments
    overrides = {"model_path": str(model), "use_sim_time": True, **topic_params, **(params or {})}
    overrides.pop("instruction", None)
    if instruction:
        overrides["instruction"] = instruction
    try:
        node = RoboVLMNode(context=context, parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()])
    except ParameterError as exc:
        rclpy.try_shutdown(context=context)
        raise ReplayError(str(exc)) from exc
    player = Node("robovlm_replay", context=context)
    executor = SingleThreadedExecutor(context=context)
    timeline = _Timeline(rate)
    recorder = _Recorder(out, timeline, stamped=bool(node.get_parameter("stamped").value))
    clock_stop = threading.Event()
    clock_thread = spinner = None
    reference: list[tuple[int, tuple[float, float, float]]] = []
    messages = 0
    try:
        if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            raise ReplayError("the node failed to configure (see its error above)")
        s = node.settings
        cmd_type = TwistStamped if s.stamped else Twist
        player.create_subscription(
            cmd_type,
            s.cmd_vel_topic,
            recorder.callback("/cmd_vel"),
            QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE),
            raw=True,
        )
        player.create_subscription(DiagnosticArray, "/diagnostics", recorder.callback("/diagnostics"), 10, raw=True)
        clock_pub = player.create_publisher(Clock, "/clock", 10)
        pubs = {t: player.create_publisher(_msg_class(types[t]), t, _qos(r)) for r, t in played.items()}
        executor.add_node(node)
        executor.add_node(player)
        spinner = threading.Thread(target=executor.spin, daemon=True)
        spinner.start()
        _wait(
            lambda: (
                all(p.get_subscription_count() > 0 for p in [*pubs.values(), clock_pub])
                and player.count_publishers(s.cmd_vel_topic) > 0
            ),
            "the node's subscriptions and cmd_vel publisher were not discovered over DDS",
        )

        stream = iter_bag(bag, set(played.values()) | ({reference_topic} if reference_topic else set()))
        first = next(stream, None)
        if first is None:
            raise ReplayError(f"{bag}: no messages on the mapped topics")
        timeline.start(first.timestamp_ns)
        clock_thread = threading.Thread(target=_publish_clock, args=(clock_pub, timeline, clock_stop), daemon=True)
        clock_thread.start()
        _wait(lambda: node.get_clock().now().nanoseconds >= first.timestamp_ns, "the node did not take /clock")
        if node.trigger_activate() != TransitionCallbackReturn.SUCCESS:
            raise ReplayError("the node failed to activate")
        timeline.resume()  # bag time runs from here: no input is stale because discovery or activation took time
        last_ns = first.timestamp_ns
        for m in _chain(first, stream):
            delay = timeline.wall_of(m.timestamp_ns) - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            last_ns = m.timestamp_ns
            if m.topic == reference_topic:
                reference.append((m.timestamp_ns, twist_values(m)))
                continue
            pubs[m.topic].publish(m.data)
            messages += 1
        # the report covers the bag's span; the tail only lets the last frame's commands out (inputs then go stale)
        duration_s = (last_ns - timeline.t0_ns) * 1e-9
        t_end_ns = last_ns
        infer, counters = node.status.infer_events, node.status.snapshot()
        ticks = max(counters.control_ticks, 1)
        assert node.control is not None
        safety_counts = node.control.safety.counts
        report = ReplayReport(
            bag=str(bag),
            messages_played=messages,
            skipped_topics=skipped,
            duration_s=duration_s,
            commands=0,
            control_rate_hz=0.0,
            inferences=len(infer),
            inference_rate_hz=len(infer) / max(duration_s, 1e-9),
            latency_p50_ms=infer.percentile(50) * 1e3,
            latency_p99_ms=infer.percentile(99) * 1e3,
            camera_to_command_p50_ms=node.status.e2e_events.percentile(50) * 1e3,
            control_ticks=counters.control_ticks,
            stopped={c: counters.stops.get(c, 0) / ticks for c in STOP_CAUSES},
            faults={**counters.faults, **{f"safety_{k}": v for k, v in safety_counts.items()}},
            instruction=f"{found.text!r} ({found.source})",
        )
        tail_ns = last_ns + int(min(s.input_timeout_s, 0.5) * 1e9)
        while timeline.now_ns() < tail_ns:
            time.sleep(0.01)
        node.trigger_deactivate()  # zero as the last command
        time.sleep(0.2)
    finally:
        clock_stop.set()
        if clock_thread is not None:
            clock_thread.join(timeout=2.0)
        executor.shutdown()
        if spinner is not None:
            spinner.join(timeout=5.0)
        node.destroy_node()
        player.destroy_node()
        rclpy.try_shutdown(context=context)
        recorder.close()

    commands = recorder.commands(cmd_type)
    during = [(t, c) for t, c in commands if timeline.t0_ns <= t <= t_end_ns]
    report.commands = len(commands)
    report.control_rate_hz = len(during) / max(duration_s, 1e-9)
    report.agreement = _agreement(during, reference, s.action_fields)
    report.mae_samples = max((a.samples for a in report.agreement.values()), default=0)
    report.out = str(out) if out is not None else None
    return report


def _chain(first, rest):
    yield first
    yield from rest


def _wait(cond, what: str, timeout: float = DISCOVERY_TIMEOUT_S) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise ReplayError(f"{what} within {timeout:.0f} s")
        time.sleep(0.02)


class _Timeline:
    """Bag time <-> wall time at ``rate``; holds at the first message until ``resume``."""

    def __init__(self, rate: float) -> None:
        self.rate, self.t0_ns, self._wall0 = rate, 0, None
        self._lock = threading.Lock()

    def start(self, t0_ns: int) -> None:
        self.t0_ns = t0_ns

    def resume(self) -> None:
        with self._lock:
            self._wall0 = time.monotonic()

    def now_ns(self) -> int:
        with self._lock:
            wall0 = self._wall0
        return self.t0_ns if wall0 is None else self.t0_ns + int((time.monotonic() - wall0) * self.rate * 1e9)

    def wall_of(self, t_ns: int) -> float:
        return self._wall0 + (t_ns - self.t0_ns) * 1e-9 / self.rate


def _publish_clock(pub, timeline: _Timeline, stop: threading.Event) -> None:
    while not stop.is_set():
        ns = timeline.now_ns()
        msg = Clock()
        msg.clock.sec, msg.clock.nanosec = ns // 10**9, ns % 10**9
        pub.publish(msg)
        stop.wait(CLOCK_PERIOD_S)


class _Recorder:
    """Raw messages from the node, stamped in bag time, written to ``out`` as they arrive (if given) by a writer
    thread of its own (sqlite3 connections stay in the thread that made them); the commands are kept (small) for
    the error report."""

    def __init__(self, out: str | Path | None, timeline: _Timeline, *, stamped: bool) -> None:
        self.timeline = timeline
        self._lock = threading.Lock()
        self._commands: list[tuple[int, bytes]] = []
        self._queue: queue.Queue | None = None
        self._thread: threading.Thread | None = None
        self.error: Exception | None = None
        if out is not None:
            types = {
                "/cmd_vel": "geometry_msgs/msg/TwistStamped" if stamped else "geometry_msgs/msg/Twist",
                "/diagnostics": "diagnostic_msgs/msg/DiagnosticArray",
            }
            self._queue = queue.Queue()
            self._thread = threading.Thread(target=self._write, args=(Path(out), types), daemon=True)
            self._thread.start()

    def _write(self, out: Path, types: dict[str, str]) -> None:
        try:
            with Writer(out, version=9) as w:
                conns = {t: w.add_connection(t, ty, typestore=TYPESTORE) for t, ty in types.items()}
                while (item := self._queue.get()) is not None:
                    topic, t, data = item
                    w.write(conns[topic], t, data)
        except Exception as exc:  # reported by close(): the replay's result names it
            self.error = exc

    def callback(self, topic: str):
        def cb(data: bytes) -> None:
            t = self.timeline.now_ns()
            if topic == "/cmd_vel":
                with self._lock:
                    self._commands.append((t, data))
            if self._queue is not None:
                self._queue.put((topic, t, data))

        return cb

    def commands(self, cmd_type) -> list[tuple[int, np.ndarray]]:
        with self._lock:
            rec = list(self._commands)
        out = []
        for t, data in rec:
            msg = deserialize_message(data, cmd_type)
            tw = msg.twist if cmd_type is TwistStamped else msg
            out.append((t, np.array([tw.linear.x, tw.linear.y, tw.angular.z])))
        return out

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=30.0)
            self._thread = None
        if self.error is not None:
            raise ReplayError(f"could not write the output bag: {self.error}")


def _agreement(
    commands: list[tuple[int, np.ndarray]], reference: list[tuple[int, tuple[float, float, float]]], fields: list[str]
) -> dict[str, FieldAgreement]:
    """Each command paired with the teleop command in effect at its bag time, compared per field."""
    fields = [f for f in fields if f in REFERENCE_FIELDS]
    if not reference or not commands or not fields:
        return {}
    ref_t = np.array([t for t, _ in reference])
    ref_v = np.array([v for _, v in reference])
    policy, operator = [], []
    for t, cmd in commands:
        i = int(np.searchsorted(ref_t, t, side="right")) - 1
        if i >= 0:
            policy.append([cmd[REFERENCE_FIELDS[f]] for f in fields])
            operator.append([ref_v[i][REFERENCE_FIELDS[f]] for f in fields])
    return agreement(np.asarray(policy).reshape(-1, len(fields)), np.asarray(operator).reshape(-1, len(fields)), fields)
