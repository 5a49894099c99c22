"""RoboVLMNode: a lifecycle node that turns cameras, joint states and an instruction into safe velocity commands.

Two loops, decoupled:
- the inference thread runs the engine's streaming ``step()`` on each new head-camera frame, as fast as the model
  allows, and hands an ``ActionChunk`` (stamped with the frame's arrival time on the node clock) to the scheduler;
- the control thread, paced on absolute deadlines of the node clock at ``control_rate_hz`` (so ``use_sim_time``
  works and no subscription callback delays a tick), takes the action due now, passes it through the safety filter
  and publishes it. A slow or crashed model makes the robot stop, never run on a stale command.

Lifecycle (ros2/demos lifecycle_py, Nav2): parameters are validated and the checkpoint loaded on configure
(FAILURE names the bad parameter or missing file); activate starts the inference thread and the control timer;
deactivate and shutdown publish a zero command as the last message; cleanup frees everything.
The interpreter's GIL switch interval is shortened while the node runs, so the control thread is not held back
for the default 5 ms when the inference thread runs Python code.
All times come from the node clock, so ``use_sim_time`` works.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Twist, TwistStamped
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.duration import Duration
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import Node as LifecycleNode
from rclpy.lifecycle import State, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import String

from robovlm.runtime.engine import ENGINES, build_engine
from robovlm.runtime.worker import EngineProcess
from robovlm.runtime.metrics import EventWindow
from robovlm.runtime.safety import SafetyFilter, SafetyLimits
from robovlm.runtime.scheduler import MODES, ActionChunk, ChunkScheduler

from .convert import (TWIST_FIELDS, ImageConversionError, JointStateError, compressed_to_rgb, image_to_rgb,
                      joint_state_vector, make_twist)

# name -> (default, description). Types are checked on configure, so a bad value fails configure with its name
# instead of crashing the process at start-up.
PARAMETERS: dict[str, tuple[Any, str]] = {
    "model_path": ("", "checkpoint directory (config.json, model.safetensors, stats.json)"),
    "device": ("cpu", "cpu | cuda"),
    "engine": ("torch", f"inference engine: {' | '.join(ENGINES)}"),
    "engine_process": (True, "run the model in its own process (keeps the control loop's timing and survives "
                             "model crashes); false: a thread in this process"),
    "instruction": ("", "language instruction; may change at runtime (also settable on instruction_topic)"),
    "instruction_topic": ("instruction", "std_msgs/String topic (latched) that sets the instruction"),
    "control_rate_hz": (20.0, "rate of cmd_vel publication, Hz"),
    "head_camera_topic": ("head_camera/image_raw", "head camera topic"),
    "head_camera_compressed": (False, "head camera publishes sensor_msgs/CompressedImage instead of Image"),
    "hand_camera_topic": ("hand_camera/image_raw", "gripper (hand) camera topic"),
    "hand_camera_compressed": (False, "hand camera publishes sensor_msgs/CompressedImage instead of Image"),
    "require_hand_camera": (False, "stop when the hand camera is stale; false: the model's missing_hand policy"),
    "joint_states_topic": ("joint_states", "sensor_msgs/JointState topic"),
    "state_joints": ([""], "joint names in state order; empty: the checkpoint's stats.json joint_names"),
    "cmd_vel_topic": ("cmd_vel", "velocity command topic"),
    "stamped": (False, "publish geometry_msgs/TwistStamped instead of Twist"),
    "frame_id": ("base_link", "frame_id of TwistStamped commands"),
    "action_fields": (["linear.x", "linear.y"], "Twist field for each action component"),
    "max_velocity": ([0.5], "velocity limit per action field (one value: all fields), m/s or rad/s"),
    "max_accel": ([1.0], "acceleration limit per action field (one value: all fields), m/s^2 or rad/s^2"),
    "input_timeout_s": (0.5, "stop when a required input is older than this, s"),
    "chunk_timeout_s": (1.0, "stop when the newest action chunk is older than this (model stalled), s"),
    "chunk_mode": ("ensemble", f"action selection: {' | '.join(MODES)}"),
    "ensemble_decay": (0.01, "temporal-ensembling weight decay per chunk (ACT uses 0.01)"),
    "control_rt_priority": (10, "SCHED_FIFO priority of the control thread (1-99); 0: normal scheduling. Needs "
                                "CAP_SYS_NICE or an rtprio limit; without it the node warns and runs unprivileged"),
    "autostart": (False, "configure and activate on start (for use without a lifecycle manager)"),
}
RUNTIME_CHANGEABLE = {"instruction"}
CONTROL_SWITCH_INTERVAL_S = 0.0005  # GIL hand-off bound for the control thread (Python's default is 5 ms)


class ParameterError(ValueError):
    """A node parameter is invalid; the message names it."""


@dataclass
class Settings:
    model_path: str
    device: str
    engine: str
    engine_process: bool
    instruction: str
    instruction_topic: str
    control_rate_hz: float
    head_camera_topic: str
    head_camera_compressed: bool
    hand_camera_topic: str
    hand_camera_compressed: bool
    require_hand_camera: bool
    joint_states_topic: str
    state_joints: list[str]
    cmd_vel_topic: str
    stamped: bool
    frame_id: str
    action_fields: list[str]
    max_velocity: list[float]
    max_accel: list[float]
    input_timeout_s: float
    chunk_timeout_s: float
    chunk_mode: str
    ensemble_decay: float
    control_rt_priority: int
    autostart: bool


def _typed(name: str, value: Any, kind: type) -> Any:
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        value = float(value)
        if not math.isfinite(value):
            raise ParameterError(f"parameter '{name}' must be finite, got {value}")
        return value
    if kind is list:
        if not isinstance(value, (list, tuple)):
            raise ParameterError(f"parameter '{name}' must be a list, got {value!r}")
        return list(value)
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise ParameterError(f"parameter '{name}' must be {kind.__name__}, got {value!r}")
    return value


def validate_settings(raw: dict[str, Any]) -> Settings:
    """Check every parameter; raise ``ParameterError`` naming the first bad one."""
    v: dict[str, Any] = {}
    for name, (default, _) in PARAMETERS.items():
        kind = type(default) if not isinstance(default, list) else list
        v[name] = _typed(name, raw[name], kind)
    if not v["model_path"]:
        raise ParameterError("parameter 'model_path' is empty: set it to a checkpoint directory")
    if v["device"] not in ("cpu", "cuda"):
        raise ParameterError(f"parameter 'device' must be 'cpu' or 'cuda', got {v['device']!r}")
    if v["engine"] not in ENGINES:
        raise ParameterError(f"parameter 'engine' must be one of {list(ENGINES)}, got {v['engine']!r}")
    if not 0.0 < v["control_rate_hz"] <= 1000.0:
        raise ParameterError(f"parameter 'control_rate_hz' must be in (0, 1000], got {v['control_rate_hz']}")
    for name in ("input_timeout_s", "chunk_timeout_s"):
        if v[name] <= 0.0:
            raise ParameterError(f"parameter '{name}' must be > 0, got {v[name]}")
    if not 0 <= v["control_rt_priority"] <= 99:
        raise ParameterError(f"parameter 'control_rt_priority' must be in [0, 99], got {v['control_rt_priority']}")
    if v["ensemble_decay"] < 0.0:
        raise ParameterError(f"parameter 'ensemble_decay' must be >= 0, got {v['ensemble_decay']}")
    if v["chunk_mode"] not in MODES:
        raise ParameterError(f"parameter 'chunk_mode' must be one of {list(MODES)}, got {v['chunk_mode']!r}")
    for name in ("instruction_topic", "head_camera_topic", "hand_camera_topic", "joint_states_topic", "cmd_vel_topic"):
        if not v[name].strip():
            raise ParameterError(f"parameter '{name}' is empty")
    fields = v["action_fields"]
    if not fields or any(f not in TWIST_FIELDS for f in fields) or len(set(fields)) != len(fields):
        raise ParameterError(f"parameter 'action_fields' must be distinct names from {list(TWIST_FIELDS)}, "
                             f"got {fields}")
    for name in ("max_velocity", "max_accel"):
        vals = v[name]
        if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in vals):
            raise ParameterError(f"parameter '{name}' must be numbers, got {vals}")
        vals = [float(x) for x in vals]
        if len(vals) == 1:
            vals = vals * len(fields)
        if len(vals) != len(fields) or not all(math.isfinite(x) and x > 0 for x in vals):
            raise ParameterError(f"parameter '{name}' must hold one positive value or one per action field "
                                 f"({len(fields)}), got {v[name]}")
        v[name] = vals
    joints = [j for j in v["state_joints"] if j != ""]
    if not all(isinstance(j, str) for j in joints) or len(set(joints)) != len(joints):
        raise ParameterError(f"parameter 'state_joints' must be distinct joint names, got {v['state_joints']}")
    v["state_joints"] = joints
    return Settings(**v)


@dataclass
class _Latest:
    value: Any
    rx_time: float  # node clock, seconds
    seq: int
    stamp: float | None = None  # header stamp, seconds (cameras)


class RoboVLMNode(LifecycleNode):
    def __init__(self, node_name: str = "robovlm", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        for name, (default, description) in PARAMETERS.items():
            self.declare_parameter(name, default, ParameterDescriptor(description=description, dynamic_typing=True))
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.settings: Settings | None = None
        self.engine = None
        self._lock = threading.Lock()
        self._publish_lock = threading.Lock()  # no control command can follow the final zero
        self._inputs: dict[str, _Latest] = {}
        self._instruction = ""
        self._active = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._subs: list = []
        self._timers: list = []
        self._cmd_pub = None
        self._diag_pub = None
        self._control_thread: threading.Thread | None = None
        self.control_scheduling = "not started"
        self.faults: dict[str, int] = {}
        self._last_log: dict[str, float] = {}
        self._control_events = EventWindow(400)
        self._infer_events = EventWindow(200)
        self._e2e_events = EventWindow(200)
        self._pending_frame_stamp: float | None = None
        self.last_command: np.ndarray | None = None

    # ----------------------------------------------------------------------------------------------- helpers
    def now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _count(self, cause: str, message: str, *, error: bool = False) -> None:
        """Count a fault and log it at most once per 5 s per cause (wall time, so a paused sim clock still logs)."""
        self.faults[cause] = self.faults.get(cause, 0) + 1
        t = time.monotonic()
        if t - self._last_log.get(cause, -math.inf) >= 5.0:
            self._last_log[cause] = t
            text = f"[{cause}] {message} (count {self.faults[cause]})"
            if error:  # rclpy ties one severity to each call site: keep the two calls apart
                self.get_logger().error(text)
            else:
                self.get_logger().warning(text)

    def _on_set_parameters(self, params: list) -> SetParametersResult:
        for p in params:
            if p.name == "instruction":
                if not isinstance(p.value, str):
                    return SetParametersResult(successful=False, reason="instruction must be a string")
                self._set_instruction(p.value, source="parameter")
            elif self.settings is not None and p.name in PARAMETERS and p.name not in RUNTIME_CHANGEABLE:
                return SetParametersResult(successful=False,
                                           reason=f"'{p.name}' takes effect on configure: deactivate, cleanup, "
                                                  "set it, then configure again")
        return SetParametersResult(successful=True)

    def _set_instruction(self, text: str, *, source: str) -> None:
        text = text.strip()
        with self._lock:
            changed = text != self._instruction
            self._instruction = text
        if changed:
            self.get_logger().info(f"instruction from {source}: {text!r}")

    # ----------------------------------------------------------------------------------------------- lifecycle
    def on_configure(self, state: State) -> TransitionCallbackReturn:
        try:
            return self._configure()
        except Exception as exc:  # never a silent failure: name what broke, stay unconfigured
            self.get_logger().error(f"configure failed: {type(exc).__name__}: {exc}\n{traceback.format_exc()}")
            self._release()
            return TransitionCallbackReturn.FAILURE

    def _configure(self) -> TransitionCallbackReturn:
        raw = {name: self.get_parameter(name).value for name in PARAMETERS}
        try:
            s = validate_settings(raw)
        except ParameterError as exc:
            self.get_logger().error(f"configure failed: {exc}")
            return TransitionCallbackReturn.FAILURE
        try:
            if s.engine_process:
                engine = EngineProcess(s.engine, s.model_path, device=s.device)
            else:
                engine = build_engine(s.engine, s.model_path, device=s.device)
        except Exception as exc:  # checkpoint, config and device errors all name their cause
            self.get_logger().error(f"configure failed: cannot load model_path '{s.model_path}': {exc}")
            return TransitionCallbackReturn.FAILURE
        self.engine = engine  # released by _release() if anything below fails
        if len(s.action_fields) != engine.action_dim:
            self.get_logger().error(f"configure failed: parameter 'action_fields' has {len(s.action_fields)} fields "
                                    f"but the model predicts {engine.action_dim} action components")
            self._release()
            return TransitionCallbackReturn.FAILURE
        if engine.uses_state:
            if not s.state_joints:
                s.state_joints = list(engine.stats.joint_names)
            if len(s.state_joints) != engine.state_dim:
                self.get_logger().error(f"configure failed: parameter 'state_joints' names {len(s.state_joints)} "
                                        f"joints but the model's state has {engine.state_dim} values")
                self._release()
                return TransitionCallbackReturn.FAILURE
        self.settings, self.engine = s, engine
        self._instruction = s.instruction.strip()
        self.safety = SafetyFilter(SafetyLimits(max_velocity=s.max_velocity, max_accel=s.max_accel,
                                                input_timeout_s=s.input_timeout_s, chunk_timeout_s=s.chunk_timeout_s))
        self.scheduler = ChunkScheduler(s.chunk_mode, chunk_timeout_s=s.chunk_timeout_s,
                                        ensemble_decay=s.ensemble_decay)

        cmd_qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        self._cmd_pub = self.create_lifecycle_publisher(TwistStamped if s.stamped else Twist, s.cmd_vel_topic, cmd_qos)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        cam = CompressedImage if s.head_camera_compressed else Image
        self._subs.append(self.create_subscription(cam, s.head_camera_topic, lambda m: self._on_camera("head", m),
                                                   qos_profile_sensor_data))
        if engine.uses_hand:
            cam = CompressedImage if s.hand_camera_compressed else Image
            self._subs.append(self.create_subscription(cam, s.hand_camera_topic, lambda m: self._on_camera("hand", m),
                                                       qos_profile_sensor_data))
        if engine.uses_state:
            self._subs.append(self.create_subscription(JointState, s.joint_states_topic, self._on_joint_state,
                                                       qos_profile_sensor_data))
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self._subs.append(self.create_subscription(String, s.instruction_topic,
                                                   lambda m: self._set_instruction(m.data, source="topic"), latched))
        self._timers = [self.create_timer(1.0, self._publish_diagnostics)]
        self.get_logger().info(f"configured: {engine.name} engine on {s.device}, model {s.model_path}, "
                               f"{s.control_rate_hz:g} Hz, chunk_mode {s.chunk_mode}, fields {s.action_fields}")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        try:
            self.engine.reset()
        except Exception as exc:  # e.g. the inference process died while inactive
            self.get_logger().error(f"activate failed: the engine cannot reset: {exc}")
            return TransitionCallbackReturn.FAILURE
        ret = super().on_activate(state)  # enables the lifecycle publisher
        self.scheduler.reset()
        self.safety.reset()
        # A fresh stop event per activation: a thread of an earlier activation that is still waiting (for sim time
        # that does not advance, say) can never resume alongside the new ones.
        self._stop = threading.Event()
        self._active = True
        self._thread = threading.Thread(target=self._inference_loop, args=(self._stop,), name="robovlm-inference",
                                        daemon=True)
        self._thread.start()
        self._control_thread = threading.Thread(target=self._control_loop, args=(self._stop,), name="robovlm-control",
                                                daemon=True)
        self._control_thread.start()
        self.get_logger().info("active: publishing commands")
        return ret

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        self._halt()
        return super().on_deactivate(state)

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        if self._active:
            self._halt()
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: State) -> TransitionCallbackReturn:
        self._active = False
        self._stop.set()
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def _halt(self) -> None:
        """Stop both loops and publish zero as the last command (publisher still active)."""
        with self._publish_lock:
            self._active = False
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10.0)  # at most one model step
        if self._control_thread is not None:
            self._control_thread.join(timeout=1.0)  # may wait on a paused sim clock; it can no longer publish
        self._thread = self._control_thread = None
        self._publish_zero(final=True)
        self.get_logger().info("inactive: zero command published")

    def _publish_zero(self, *, final: bool = False) -> None:
        """Publish a zero command (while active, or as the final message of a halt)."""
        if self._cmd_pub is None or self.settings is None:
            return
        zero = np.zeros(len(self.settings.action_fields))
        with self._publish_lock:
            if not (final or self._active):
                return
            self._cmd_pub.publish(make_twist(zero, self.settings.action_fields, stamped=self.settings.stamped,
                                             stamp=self.get_clock().now().to_msg(), frame_id=self.settings.frame_id))
            self.last_command = zero

    def _release(self) -> None:
        for sub in self._subs:
            self.destroy_subscription(sub)
        for timer in self._timers:
            self.destroy_timer(timer)
        if self._cmd_pub is not None:
            self.destroy_lifecycle_publisher(self._cmd_pub)
        if self._diag_pub is not None:
            self.destroy_publisher(self._diag_pub)
        self._subs, self._timers, self._cmd_pub, self._diag_pub = [], [], None, None
        if self.engine is not None and hasattr(self.engine, "close"):
            self.engine.close()
        self.engine, self.settings = None, None
        with self._lock:
            self._inputs.clear()

    # ----------------------------------------------------------------------------------------------- inputs
    def _store(self, key: str, value: Any, stamp: float | None = None) -> None:
        with self._lock:
            prev = self._inputs.get(key)
            self._inputs[key] = _Latest(value, self.now(), (prev.seq + 1) if prev else 0, stamp)

    def _on_camera(self, which: str, msg: Image | CompressedImage) -> None:
        try:
            rgb = compressed_to_rgb(msg) if isinstance(msg, CompressedImage) else image_to_rgb(msg)
        except ImageConversionError as exc:
            self._count("bad_image", f"{which} camera: {exc}")
            return
        self._store(which, rgb, msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9)

    def _on_joint_state(self, msg: JointState) -> None:
        try:
            vec = joint_state_vector(msg, self.settings.state_joints)
        except JointStateError as exc:
            self._count("bad_joint_state", str(exc))
            return
        self._store("state", vec)

    def required_inputs(self) -> list[str]:
        req = ["head"]
        if self.engine is not None and self.engine.uses_hand and self.settings.require_hand_camera:
            req.append("hand")
        if self.engine is not None and self.engine.uses_state:
            req.append("state")
        return req

    def input_ages(self, now: float) -> dict[str, float | None]:
        with self._lock:
            return {k: (now - self._inputs[k].rx_time) if k in self._inputs else None for k in self.required_inputs()}

    # ----------------------------------------------------------------------------------------------- inference
    def _inference_loop(self, stop: threading.Event) -> None:
        last_seq = -1
        timeout = self.settings.input_timeout_s
        while not stop.is_set():
            now = self.now()
            with self._lock:
                head = self._inputs.get("head")
                hand = self._inputs.get("hand")
                st = self._inputs.get("state")
                instruction = self._instruction
            ages = self.input_ages(now)
            if head is None or head.seq == last_seq or any(a is None or a > timeout for a in ages.values()):
                stop.wait(0.002)
                continue
            if not instruction:
                self._count("no_instruction", "no instruction yet: set the 'instruction' parameter or publish one")
                stop.wait(0.05)
                continue
            hand_rgb = hand.value if (hand is not None and now - hand.rx_time <= timeout) else None
            t0 = time.perf_counter()
            try:
                actions = self.engine.step(head.value, hand_rgb, None if st is None else st.value, instruction)
            except Exception as exc:  # keep the loop alive; the control loop stops the robot meanwhile
                self._count("inference_error", f"{type(exc).__name__}: {exc}", error=True)
                stop.wait(0.05)
                continue
            latency = time.perf_counter() - t0
            last_seq = head.seq
            self.scheduler.push(ActionChunk(stamp=head.rx_time, dt=self.engine.stats.action_dt, actions=actions))
            self._infer_events.add(self.now(), latency)
            with self._lock:
                self._pending_frame_stamp = head.stamp  # the next command is the first to use this frame

    # ----------------------------------------------------------------------------------------------- control
    def _set_control_scheduling(self) -> None:
        """Real-time priority for this (control) thread, as ros2_control does; measured in ``make bench``:
        with the model saturating both cores, p99 tick jitter drops from about 5% of the period to under 1%."""
        prio = self.settings.control_rt_priority
        if prio == 0 or not hasattr(os, "sched_setscheduler"):
            self.control_scheduling = "SCHED_OTHER"
            return
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(prio))
            self.control_scheduling = f"SCHED_FIFO {prio}"
        except OSError as exc:
            self.control_scheduling = f"SCHED_OTHER (SCHED_FIFO refused: {exc.strerror})"
            self.get_logger().warning(f"control thread runs without real-time priority ({exc.strerror}); tick "
                                      "jitter grows under load. Grant it with an rtprio limit "
                                      "(/etc/security/limits.conf) or CAP_SYS_NICE, or set control_rt_priority 0")

    def _control_loop(self, stop: threading.Event) -> None:
        """Tick at absolute deadlines (no drift); after an overrun of more than a period, resynchronize."""
        self._set_control_scheduling()
        clock = self.get_clock()
        period = Duration(nanoseconds=int(1e9 / self.settings.control_rate_hz))
        deadline = clock.now()
        while not stop.is_set():
            deadline = deadline + period
            now = clock.now()
            if now > deadline + period:
                self._count("control_overrun", "control tick more than one period late; resynchronizing")
                deadline = now
            try:
                if not clock.sleep_until(deadline, context=self.context):
                    return  # context shut down
            except Exception as exc:  # clock or context gone during shutdown
                self.get_logger().debug(f"control loop ends: {exc}")
                return
            if stop.is_set():
                return
            try:
                self._on_control()
            except Exception as exc:  # the control loop must outlive any bug in one tick: stop the robot, go on
                self._count("control_error", f"{type(exc).__name__}: {exc}", error=True)
                self._publish_zero()

    def _on_control(self) -> None:
        stamp = self.get_clock().now()  # one reading: the safety filter's time and the command's stamp agree
        now = stamp.nanoseconds * 1e-9
        action = self.scheduler.action_at(now) if self._active else None
        ages = self.input_ages(now)
        decision = self.safety.apply(action, now=now, active=self._active, input_ages=ages)
        if decision.cause == "stale_input":
            self._count("stale_input", f"input older than {self.settings.input_timeout_s}s or missing: {ages}; stopping")
        elif decision.cause == "no_fresh_chunk":
            self._count("no_fresh_chunk", "no fresh action chunk (model slow or stalled); stopping")
        elif decision.cause == "nonfinite_output":
            self._count("nonfinite_output", "model output is not finite; stopping")
        with self._publish_lock:
            if not self._active:
                return
            self._cmd_pub.publish(make_twist(decision.command, self.settings.action_fields, stamped=self.settings.stamped,
                                             stamp=stamp.to_msg(), frame_id=self.settings.frame_id))
            self.last_command = decision.command
        self._control_events.add(now)
        with self._lock:
            frame_stamp, self._pending_frame_stamp = self._pending_frame_stamp, None
        if frame_stamp is not None and decision.cause not in ("stale_input", "no_fresh_chunk", "nonfinite_output"):
            self._e2e_events.add(now, now - frame_stamp)  # camera stamp -> first command that used the frame

    # ----------------------------------------------------------------------------------------------- diagnostics
    def diagnostics(self) -> DiagnosticStatus:
        now = self.now()
        s = self.settings
        st = DiagnosticStatus(name=f"{self.get_name()}: inference", hardware_id=f"{s.engine}/{s.device}")
        ages = self.input_ages(now)
        control = self._control_events.rate_hz(now)
        values = {
            "active": str(self._active),
            "engine": s.engine, "device": s.device, "control_scheduling": self.control_scheduling,
            "inference_rate_hz": f"{self._infer_events.rate_hz(now):.2f}",
            "inference_latency_p50_ms": f"{self._infer_events.percentile(50) * 1e3:.1f}",
            "inference_latency_p99_ms": f"{self._infer_events.percentile(99) * 1e3:.1f}",
            "camera_to_command_p50_ms": f"{self._e2e_events.percentile(50) * 1e3:.1f}",
            "camera_to_command_p99_ms": f"{self._e2e_events.percentile(99) * 1e3:.1f}",
            "control_rate_hz": f"{control:.2f}",
            "control_rate_target_hz": f"{s.control_rate_hz:.2f}",
            **{f"input_age_{k}_s": ("never" if a is None else f"{a:.3f}") for k, a in ages.items()},
            **{f"faults_{k}": str(v) for k, v in sorted(self.faults.items())},
            **{f"safety_{k}": str(v) for k, v in sorted(self.safety.counts.items())},
        }
        st.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        stale = [k for k, a in ages.items() if a is None or a > s.input_timeout_s]
        newest = self.scheduler.newest_stamp()
        if not self._active:
            st.level, st.message = DiagnosticStatus.OK, "inactive"
        elif stale:
            st.level, st.message = DiagnosticStatus.ERROR, f"stopped: stale inputs {stale}"
        elif newest is None or now - newest > s.chunk_timeout_s:
            st.level, st.message = DiagnosticStatus.ERROR, "stopped: no fresh action chunk"
        elif abs(control - s.control_rate_hz) > 0.1 * s.control_rate_hz:
            st.level, st.message = DiagnosticStatus.WARN, f"control rate {control:.1f} Hz off target"
        else:
            st.level, st.message = DiagnosticStatus.OK, "running"
        return st

    def _publish_diagnostics(self) -> None:
        if self._diag_pub is None or self.settings is None:
            return
        msg = DiagnosticArray()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.status = [self.diagnostics()]
        self._diag_pub.publish(msg)


def main(args: list[str] | None = None) -> int:
    """Console entry point. ``autostart:=true`` configures and activates without a lifecycle manager.

    SIGINT/SIGTERM deactivate the node first, so the last command on ``cmd_vel`` is zero.
    """
    sys.setswitchinterval(CONTROL_SWITCH_INTERVAL_S)
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    node = RoboVLMNode()
    # Single-threaded on purpose: inference has its own thread, and rclpy's MultiThreadedExecutor (9.1.x) stalls
    # every Python thread for up to a timer period when a subscription and a publisher share the process
    # (ros2/rclpy#1452, fixed upstream by ros2/rclpy#1547).
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    code = 0
    try:
        if node.get_parameter("autostart").value is True:
            if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                node.get_logger().error("autostart: configure failed; exiting")
                code = 1
                stop.set()
            elif node.trigger_activate() != TransitionCallbackReturn.SUCCESS:
                node.get_logger().error("autostart: activate failed; exiting")
                code = 1
                stop.set()
        while not stop.wait(0.1):
            pass
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        try:
            node.trigger_shutdown()  # publishes zero first when active
        except Exception as exc:  # already finalized or mid-transition: nothing left to stop
            node.get_logger().debug(f"shutdown transition: {exc}")
        executor.shutdown()
        spinner.join(timeout=5.0)
        node.destroy_node()
        rclpy.try_shutdown()
    return code


if __name__ == "__main__":
    raise SystemExit(main())
