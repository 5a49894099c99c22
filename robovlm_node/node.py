"""RoboVLMNode: a lifecycle node that turns cameras, joint states and an instruction into safe velocity commands.
(Just over 400 lines while the node is still mixed in from its part files; composing it, issue 17, shrinks it.)

Files: parameters (``parameters.py``), inputs and the instruction (``inputs.py``), the inference, control and
watchdog loops (``loops.py``), engine start and restart (``supervision.py``), diagnostics (``diagnostics.py``),
the process and its signals (``process.py``); this file holds the lifecycle. Two loops, decoupled: the model refreshes
the action chunk as fast as it can; the control loop publishes at ``control_rate_hz`` whatever the model's speed.

Lifecycle (ros2/demos lifecycle_py, Nav2): parameters are validated and the checkpoint loaded on configure
(FAILURE names the bad parameter or missing file); activate starts the inference thread and the control timer;
deactivate and shutdown publish a zero command as the last message; cleanup frees everything.
The interpreter's GIL switch interval is shortened while the node runs, so the control thread is not held back
for the default 5 ms when the inference thread runs Python code.
All times come from the node clock, so ``use_sim_time`` works.
"""

from __future__ import annotations

import math
import threading
import time
import traceback
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Twist, TwistStamped
from rcl_interfaces.msg import SetParametersResult
from rclpy.lifecycle import Node as LifecycleNode
from rclpy.lifecycle import State, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import (
    DurabilityPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import String

from robovlm.model.tokenizer import checkpoint_tokenizer
from robovlm.runtime.frame_check import FrameCheck
from robovlm.runtime.metrics import EventWindow
from robovlm.runtime.safety import SafetyFilter, SafetyLimits
from robovlm.runtime.scheduler import ChunkScheduler
from robovlm.runtime.supervisor import RestartPolicy
from robovlm.runtime.worker import EngineCancelled
from robovlm.utils.hub import HubError, resolve_checkpoint

from .convert import make_twist
from .diagnostics import STOP_CAUSES, InputMonitor, NodeDiagnostics
from .inputs import INPUT_LABELS, Latest, NodeInputs
from .loops import NodeLoops
from .parameters import (
    ParameterError,
    Settings,
    declare_parameters,
    read_parameters,
    set_refusal,
    unknown_overrides,
    validate_settings,
)
from .supervision import EngineSupervision

CONTROL_SWITCH_INTERVAL_S = 0.0005  # GIL hand-off bound for the control thread (Python's default is 5 ms)


class RoboVLMNode(NodeInputs, NodeLoops, EngineSupervision, NodeDiagnostics, LifecycleNode):
    def __init__(self, node_name: str = "robovlm", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        declare_parameters(self)  # ParameterError names every bad start-up value
        for line in unknown_overrides(self):
            self.get_logger().warning(line)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.settings: Settings | None = None
        self.engine = None
        self._lock = threading.Lock()
        self._publish_lock = threading.Lock()  # no control command can follow the final zero
        self._inputs: dict[str, Latest] = {}
        self._frames: dict[str, tuple[int, np.ndarray]] = {}  # camera -> (seq, frame at the model's input size)
        self._instruction = ""
        self._instruction_error: str | None = None  # why the last instruction was refused (robot stopped)
        self._epoch = 0  # bumped when the task changes (instruction, engine restart): older chunks are dropped
        self._tokenizer = None
        self.scheduler = None
        self._engine_down: str | None = None
        self._clock_stalled = False
        self._fatal_reason = ""
        self._restart_policy: RestartPolicy | None = None
        self.shutdown_requested = threading.Event()  # set by SIGINT/SIGTERM: abandons a model load at once
        self.exit_on_error = False  # autostart: the process exits when the node goes to the error state
        self._transitions: set[str] = set()
        self._active = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._subs: list = []
        self._diag_thread: threading.Thread | None = None
        self._diag_stop = threading.Event()
        self._cmd_pub = None
        self._diag_pub = None
        self._control_thread: threading.Thread | None = None
        self._watchdog_thread: threading.Thread | None = None
        self.control_scheduling = "not started"
        self.faults: dict[str, int] = {}
        self._last_log: dict[str, float] = {}
        self._control_events = EventWindow(400)
        self._infer_events = EventWindow(200)
        self._e2e_events = EventWindow(200)
        self._pending_frame_stamp: float | None = None
        self._waiting_since: float | None = None  # activation time until the first command that is not held
        self._waiting_for = ""  # what the start waits for, as last logged
        self._frame_check = FrameCheck()
        self._frame_faults: dict[str, str] = {}  # camera -> why its newest checked frame cannot drive the robot
        self.last_command: np.ndarray | None = None
        self.monitors: dict[str, InputMonitor] = {}
        self._instruction_source, self._instruction_t = "", None
        self.control_ticks, self.stops = 0, dict.fromkeys(STOP_CAUSES, 0)
        self._last_cause: str | None = None
        self.engine_restarts, self._last_error = 0, ""

    # ----------------------------------------------------------------------------------------------- helpers
    def now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _count(self, cause: str, message: str, *, error: bool = False, log: bool = True) -> None:
        """Count a fault and log it at most once per 5 s per cause (wall time, so a paused sim clock still logs)."""
        self.faults[cause] = self.faults.get(cause, 0) + 1
        if not log:
            return
        t = time.monotonic()
        if t - self._last_log.get(cause, -math.inf) >= 5.0:
            self._last_log[cause] = t
            text = f"[{cause}] {message} (count {self.faults[cause]})"
            if error:  # rclpy ties one severity to each call site: keep the two calls apart
                self.get_logger().error(text)
            else:
                self.get_logger().warning(text)

    def _flipped(self, key: str, active: bool) -> bool:
        """Whether a condition just began or ended; the caller logs it once each way (and builds the message only
        then: these checks run per frame and per watchdog tick)."""
        if active == (key in self._transitions):
            return False
        if active:
            self._transitions.add(key)
        else:
            self._transitions.discard(key)
        return True

    def set_parameters_atomically(self, parameter_list: list[Parameter]) -> SetParametersResult:
        """The parameter services' entry point (``ros2 param set``, any parameter client): a refusal names the
        parameter and says why (``parameters.set_refusal``), before rclpy's own checks answer in type numbers."""
        for param in parameter_list:
            reason = set_refusal(self, param)
            if reason:
                self._count("parameter_refused", reason)
                return SetParametersResult(successful=False, reason=reason)
        return super().set_parameters_atomically(parameter_list)

    # ----------------------------------------------------------------------------------------------- lifecycle
    def on_configure(self, state: State) -> TransitionCallbackReturn:
        try:
            return self._configure()
        except Exception as exc:  # never a silent failure: name what broke, stay unconfigured
            self.get_logger().error(f"configure failed: {type(exc).__name__}: {exc}\n{traceback.format_exc()}")
            self._release()
            return TransitionCallbackReturn.FAILURE

    def _configure(self) -> TransitionCallbackReturn:
        try:
            s = validate_settings(read_parameters(self))
        except ParameterError as exc:
            self.get_logger().error(f"configure failed: {exc}")
            return TransitionCallbackReturn.FAILURE
        self._fatal_reason = ""
        try:  # a local directory, checked; hf://owner/name becomes its directory in the local Hub cache
            s.model_path = str(resolve_checkpoint(s.model_path))
        except HubError as exc:
            self.get_logger().error(f"configure failed: model_path: {exc}")
            return TransitionCallbackReturn.FAILURE
        self.get_logger().info(
            f"loading model {s.model_path} ({s.engine} on {s.device}, {s.engine_threads} "
            f"thread{'s' if s.engine_threads > 1 else ''}"
            f"{', own process' if s.engine_process else ''})"
        )
        try:
            engine = self._build_engine(s)
        except EngineCancelled:
            self.get_logger().warning("configure cancelled: shutdown requested while the model was loading")
            return TransitionCallbackReturn.FAILURE
        except Exception as exc:  # checkpoint, config and device errors all name their cause
            self.get_logger().error(f"configure failed: cannot load model_path '{s.model_path}': {exc}")
            return TransitionCallbackReturn.FAILURE
        self.engine = engine  # released by _release() if anything below fails
        if len(s.action_fields) != engine.action_dim:
            self.get_logger().error(
                f"configure failed: parameter 'action_fields' has {len(s.action_fields)} fields "
                f"but the model predicts {engine.action_dim} action components"
            )
            self._release()
            return TransitionCallbackReturn.FAILURE
        if engine.uses_state:
            if not s.state_joints:
                s.state_joints = list(engine.stats.joint_names)
            if len(s.state_joints) != engine.state_dim:
                self.get_logger().error(
                    f"configure failed: parameter 'state_joints' names {len(s.state_joints)} "
                    f"joints but the model's state has {engine.state_dim} values"
                )
                self._release()
                return TransitionCallbackReturn.FAILURE
        try:
            self._tokenizer = checkpoint_tokenizer(
                engine.config.backbone.tokenizer, engine.config.backbone.path, s.model_path
            )
        except Exception as exc:  # the engine loaded it, so this is a file that changed under us: say so
            self.get_logger().error(f"configure failed: cannot load the tokenizer of '{s.model_path}': {exc}")
            self._release()
            return TransitionCallbackReturn.FAILURE
        self.settings, self.engine = s, engine
        error = self.check_instruction(s.instruction.strip())
        if error:
            self.get_logger().error(f"configure failed: parameter 'instruction': {error}")
            self._release()
            return TransitionCallbackReturn.FAILURE
        self._restart_policy = RestartPolicy(max_restarts=s.engine_max_restarts, window_s=s.engine_restart_window_s)
        self._engine_down, self._clock_stalled, self._transitions = None, False, set()
        if s.use_receive_time:
            self.get_logger().warning(
                "use_receive_time: camera and joint-state header stamps are not checked; "
                "messages are timed by their arrival (for drivers whose clocks are not "
                "synchronised)"
            )
        self.monitors = {
            "head": InputMonitor(INPUT_LABELS["head"], s.head_camera_topic),
            "hand": InputMonitor(INPUT_LABELS["hand"], s.hand_camera_topic),
            "state": InputMonitor(INPUT_LABELS["state"], s.joint_states_topic),
        }
        self.control_ticks, self.stops, self._last_cause = 0, dict.fromkeys(STOP_CAUSES, 0), None
        self._frame_check = FrameCheck(
            min_side_px=s.min_image_side_px,
            min_contrast=s.min_image_contrast,
            max_saturated_fraction=s.max_saturated_fraction,
        )
        self._frame_faults = {}
        self.safety = SafetyFilter(
            SafetyLimits(
                max_velocity=s.max_velocity,
                max_accel=s.max_accel,
                input_timeout_s=s.input_timeout_s,
                chunk_timeout_s=s.chunk_timeout_s,
            )
        )
        self.scheduler = ChunkScheduler(
            s.chunk_mode, chunk_timeout_s=s.chunk_timeout_s, ensemble_decay=s.ensemble_decay
        )
        self._set_instruction(s.instruction, source="parameter")

        cmd_qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        self._cmd_pub = self.create_lifecycle_publisher(TwistStamped if s.stamped else Twist, s.cmd_vel_topic, cmd_qos)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        cam = CompressedImage if s.head_camera_compressed else Image
        self._subs.append(
            self.create_subscription(
                cam, s.head_camera_topic, lambda m: self._on_camera("head", m), qos_profile_sensor_data
            )
        )
        if engine.uses_hand:
            cam = CompressedImage if s.hand_camera_compressed else Image
            self._subs.append(
                self.create_subscription(
                    cam, s.hand_camera_topic, lambda m: self._on_camera("hand", m), qos_profile_sensor_data
                )
            )
        if engine.uses_state:
            self._subs.append(
                self.create_subscription(
                    JointState, s.joint_states_topic, self._on_joint_state, qos_profile_sensor_data
                )
            )
        latched = QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
        )
        self._subs.append(
            self.create_subscription(
                String, s.instruction_topic, lambda m: self._set_instruction(m.data, source="topic"), latched
            )
        )
        # a thread on the steady clock, not a node-clock timer: diagnostics keep coming when a stalled /clock
        # freezes node time
        self._diag_stop = threading.Event()
        self._diag_thread = threading.Thread(
            target=self._diagnostics_loop, args=(self._diag_stop,), name="robovlm-diagnostics", daemon=True
        )
        self._diag_thread.start()
        self.get_logger().info(
            f"configured: {engine.name} engine on {s.device}, model {s.model_path}, "
            f"{s.control_rate_hz:g} Hz, chunk_mode {s.chunk_mode}, fields {s.action_fields}"
        )
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
        self._waiting_since, self._waiting_for = self.now(), ""
        self._transitions.discard("startup_slow")
        self._active = True
        self._thread = threading.Thread(
            target=self._inference_loop, args=(self._stop,), name="robovlm-inference", daemon=True
        )
        self._thread.start()
        self._control_thread = threading.Thread(
            target=self._control_loop, args=(self._stop,), name="robovlm-control", daemon=True
        )
        self._control_thread.start()
        self._watchdog_thread = threading.Thread(
            target=self._watchdog_loop, args=(self._stop,), name="robovlm-watchdog", daemon=True
        )
        self._watchdog_thread.start()
        self.get_logger().info("active: publishing commands")
        return ret

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        self._halt()
        ret = super().on_deactivate(state)
        return self._deactivate_result() if ret == TransitionCallbackReturn.SUCCESS else ret

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
        for thread, timeout in (
            (self._thread, 10.0),  # at most one model step
            (self._control_thread, 1.0),  # may wait on a paused sim clock; it can't publish
            (self._watchdog_thread, 1.0),
        ):
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout=timeout)
        self._thread = self._control_thread = self._watchdog_thread = None
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
            self._cmd_pub.publish(
                make_twist(
                    zero,
                    self.settings.action_fields,
                    stamped=self.settings.stamped,
                    stamp=self.get_clock().now().to_msg(),
                    frame_id=self.settings.frame_id,
                )
            )
            self.last_command = zero

    def _release(self) -> None:
        for sub in self._subs:
            self.destroy_subscription(sub)
        if self._diag_thread is not None:
            self._diag_stop.set()
            if self._diag_thread is not threading.current_thread():
                self._diag_thread.join(timeout=2.0)
            self._diag_thread = None
        if self._cmd_pub is not None:
            self.destroy_lifecycle_publisher(self._cmd_pub)
        if self._diag_pub is not None:
            self.destroy_publisher(self._diag_pub)
        self._subs, self._cmd_pub, self._diag_pub = [], None, None
        if self.engine is not None and hasattr(self.engine, "close"):
            self.engine.close()
        self.engine, self.settings, self._tokenizer = None, None, None
        with self._lock:
            self._inputs.clear()
            self._frames.clear()
            self._frame_faults.clear()
