"""RoboVLMNode: a lifecycle node that turns cameras, joint states and an instruction into safe velocity commands.

This file is the lifecycle and nothing else (ros2/demos lifecycle_py, Nav2): configure validates the parameters,
loads the checkpoint and builds the parts (FAILURE names the bad parameter or missing file); activate starts them;
deactivate and shutdown stop them and publish a zero command as the last message; cleanup frees everything.
Each part is an object that owns its state and reaches the others through the methods its docstring names
(Nav2's collision monitor and its ``Source`` objects):

- ``status`` (``status.py``): fault counters, stop causes and latency windows, read by diagnostics as snapshots;
- ``supervisor`` (``supervision.py``): the engine, its restarts and last error;
- ``inputs`` (``inputs.py``): the newest frames, joint state and instruction, and what in them stops the robot;
- ``scheduler`` (``robovlm.runtime.scheduler``): the planned action chunks;
- ``inference`` (``inference.py``) and ``control`` (``control.py``): the two decoupled loops (the model refreshes
  the plan as fast as it can; the control loop publishes at ``control_rate_hz`` whatever the model's speed);
- ``watchdog`` (``watchdog.py``): a stalled node clock, inputs that go stale;
- ``enable`` (``operator_enable.py``): whether an operator grants motion (``require_enable``);
- ``shadow`` (``shadow.py``): the policy's commands against the operator's (``operator_cmd_topic``);
- ``plan_view`` (``plan_view.py``): ``~/plan``, ``~/executed`` and ``~/debug_image``, built only while subscribed;
- ``takeover`` (``takeover.py``): whether the operator has the robot (``operator_cmd_topic``,
  ``takeover_joy_button``);
- ``recorder`` (``recorder.py``): each activation as a rollout episode in ``record_dir``;
- ``output`` (``output.py``) and ``diagnostics`` (``diagnostics.py``): what the node publishes.

The parameters are in ``parameters.py``, the process and its signals in ``process.py``. All times come from the node
clock, so ``use_sim_time`` works. This file is longer than the parts' (about 500 lines) on purpose: every lifecycle
transition and the wiring of every part is read here, in one place, in the order the node runs it.
"""

from __future__ import annotations

import gc
import threading
import traceback
from collections.abc import Callable
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import Twist, TwistStamped
from rcl_interfaces.msg import SetParametersResult
from rclpy.lifecycle import Node as LifecycleNode
from rclpy.lifecycle import State, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy

from robovlm.model.tokenizer import checkpoint_tokenizer
from robovlm.runtime.safety import SafetyFilter
from robovlm.runtime.scheduler import ChunkScheduler
from robovlm.runtime.worker import EngineCancelled
from robovlm.utils.hub import HubError, resolve_checkpoint

from .clock import RosLoopClock
from .control import ControlLoop
from .diagnostics import Diagnostics
from .flywheel_parts import build_recorder, build_takeover
from .inference import InferenceLoop
from .inputs import Inputs, ModelInputs
from .operator_enable import HOLD_CAUSE as NOT_ENABLED
from .operator_enable import OperatorEnable
from .output import CommandPublisher
from .parameters import (
    ParameterError,
    declare_parameters,
    read_parameters,
    set_refusal,
    unknown_overrides,
    validate_settings,
)
from .plan_view import PlanView, build_plan_view
from .recorder import RolloutRecorder
from .settings import Settings
from .shadow import ShadowComparison
from .status import NodeStatus
from .subscriptions import subscribe
from .supervision import EngineSupervisor
from .takeover import Takeover
from .watchdog import Watchdog

CONTROL_SWITCH_INTERVAL_S = 0.0005  # GIL hand-off bound for the control thread (Python's default is 5 ms)


class ConfigureError(Exception):
    """Configure cannot go on; the message names the parameter or file."""


class RoboVLMNode(LifecycleNode):
    def __init__(
        self, node_name: str = "robovlm", *, engine_wrapper: Callable[[Any], Any] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(node_name, **kwargs)
        self._engine_wrapper = engine_wrapper  # simulator tools only (robovlm_node.tools.sim_node)
        declare_parameters(self)  # ParameterError names every bad start-up value
        for line in unknown_overrides(self):
            self.get_logger().warning(line)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.status = NodeStatus(self.get_logger())  # counts from the start: refused parameters too
        self.shutdown_requested = threading.Event()  # set by SIGINT/SIGTERM: abandons a model load at once
        self.exit_on_error = False  # autostart: the process exits when the node goes to the error state
        self.fatal_reason = ""  # why the node went to the lifecycle error state
        # Parts: built on configure, started on activate, freed on cleanup (None while unconfigured).
        self.settings: Settings | None = None
        self.supervisor: EngineSupervisor | None = None
        self.inputs: Inputs | None = None
        self.scheduler: ChunkScheduler | None = None
        self.output: CommandPublisher | None = None
        self.watchdog: Watchdog | None = None
        self.enable: OperatorEnable | None = None
        self.shadow: ShadowComparison | None = None
        self.plan_view: PlanView | None = None
        self.takeover: Takeover | None = None
        self.recorder: RolloutRecorder | None = None
        self.control: ControlLoop | None = None
        self.inference: InferenceLoop | None = None
        self.diagnostics: Diagnostics | None = None
        self._loop_clock = RosLoopClock(self.get_clock(), self.context)
        self._subs: list[Any] = []
        self._outcome_services: list[Any] = []  # ~/mark_success, ~/mark_failure, ~/mark_aborted while recording
        self._cmd_pub: Any = None
        self._diag_pub: Any = None
        self._agreement_pub: Any = None

    def now(self) -> float:
        """The node clock, seconds."""
        return self._loop_clock.now()

    # ----------------------------------------------------------------------------------------------- parameters
    def set_parameters_atomically(self, parameter_list: list[Parameter[Any]]) -> SetParametersResult:
        """The parameter services' entry point (``ros2 param set``, any parameter client): a refusal names the
        parameter and says why (``parameters.set_refusal``), before rclpy's own checks answer in type numbers."""
        for param in parameter_list:
            reason = set_refusal(self, param)
            if reason:
                self.status.count("parameter_refused", reason)
                return SetParametersResult(successful=False, reason=reason)
        return super().set_parameters_atomically(parameter_list)

    def _on_set_parameters(self, params: list[Parameter[Any]]) -> SetParametersResult:
        """Types, ranges and read-only are enforced by the descriptors; ``instruction`` is the one parameter that
        changes at runtime (``RUNTIME_CHANGEABLE``), taken by the inputs once configured (configure reads it before).
        ``use_sim_time`` (rclpy's own) is refused while the node is configured: the control loop's deadlines, the
        watchdog and every stamp check run on one clock, and switching it under a moving robot would jam the loop
        or compare times of two clocks."""
        for p in params:
            if (
                p.name == "use_sim_time"
                and self.settings is not None
                and p.value != self.get_parameter("use_sim_time").value
            ):
                reason = (
                    "parameter 'use_sim_time' is fixed while the node is configured (the control loop and "
                    "every stamp check run on one clock): set it at start-up, or clean up the node first"
                )
                self.status.count("parameter_refused", reason)
                return SetParametersResult(successful=False, reason=reason)
            if p.name == "instruction" and self.inputs is not None:
                error = self.inputs.set_instruction(p.value, source="parameter")
                if error:
                    return SetParametersResult(successful=False, reason=error)
        return SetParametersResult(successful=True)

    # ----------------------------------------------------------------------------------------------- lifecycle
    def on_configure(self, state: State) -> TransitionCallbackReturn:
        try:
            self._configure()
        except ConfigureError as exc:
            self.get_logger().error(f"configure failed: {exc}")
        except EngineCancelled:
            self.get_logger().warning("configure cancelled: shutdown requested while the model was loading")
        except Exception as exc:  # never a silent failure: name what broke, stay unconfigured
            self.get_logger().error(f"configure failed: {type(exc).__name__}: {exc}\n{traceback.format_exc()}")
        else:
            return TransitionCallbackReturn.SUCCESS
        self._release()
        return TransitionCallbackReturn.FAILURE

    def _configure(self) -> None:
        try:
            s = validate_settings(read_parameters(self))
        except ParameterError as exc:
            raise ConfigureError(str(exc)) from None
        self.fatal_reason = ""
        if s.engine == "remote":  # the model is the server's; the robot reads its sizes from the server
            s.engine_process = False  # nothing heavy runs here: the step is a request
            self.get_logger().info(f"connecting to the model server {s.server_url}")
        else:
            try:  # a local directory, checked; hf://owner/name becomes its directory in the local Hub cache
                s.model_path = str(resolve_checkpoint(s.model_path))
            except HubError as exc:
                raise ConfigureError(f"model_path: {exc}") from None
            self.get_logger().info(
                f"loading model {s.model_path} ({s.engine} on {s.device}, {s.engine_threads} "
                f"thread{'s' if s.engine_threads > 1 else ''}"
                f"{', own process' if s.engine_process else ''})"
            )
        self.settings = s
        self.supervisor = EngineSupervisor(
            s,
            status=self.status,
            cancel=self.shutdown_requested,
            on_fatal=self._go_to_error,
            wrap=self._engine_wrapper,
        )
        try:
            engine = self.supervisor.start()
        except EngineCancelled:
            raise
        except Exception as exc:  # checkpoint, config and device errors all name their cause
            what = f"server {s.server_url}" if s.engine == "remote" else f"model_path '{s.model_path}'"
            raise ConfigureError(f"cannot load {what}: {exc}") from None
        self.inputs = Inputs(
            s, self._model_inputs(s, engine), clock=self.now, status=self.status, on_new_task=self._new_task
        )
        error = self.inputs.check_instruction(s.instruction.strip())
        if error:
            raise ConfigureError(f"parameter 'instruction': {error}")
        if s.use_receive_time:
            self.get_logger().warning(
                "use_receive_time: camera and joint-state header stamps are not checked; messages are timed by "
                "their arrival (for drivers whose clocks are not synchronised)"
            )
        self.status.configured()
        self.scheduler = ChunkScheduler(
            s.chunk_mode, chunk_timeout_s=s.chunk_timeout_s, ensemble_decay=s.ensemble_decay
        )
        self.inputs.set_instruction(s.instruction, source="parameter")
        self._build_loops(s)
        self._subscribe(s, uses_hand=engine.uses_hand, uses_state=engine.uses_state)
        assert self.diagnostics is not None
        self.diagnostics.start()
        # What configure made lives until cleanup: out of the collector's sight, a full collection scans only newer
        # objects (with everything loaded one took about 0.1 s, and held the GIL the control thread needs)
        gc.collect()
        gc.freeze()
        self.get_logger().info(
            f"configured: {engine.name} engine on {engine.device_name if s.engine == 'remote' else s.device}, "
            f"model {s.server_url if s.engine == 'remote' else s.model_path}, "
            f"{s.control_rate_hz:g} Hz, chunk_mode {s.chunk_mode}, fields {s.action_fields}"
        )

    def _model_inputs(self, s: Settings, engine: Any) -> ModelInputs:
        """What the checkpoint takes, checked against the parameters that must agree with it."""
        if len(s.action_fields) != engine.action_dim:
            raise ConfigureError(
                f"parameter 'action_fields' has {len(s.action_fields)} fields "
                f"but the model predicts {engine.action_dim} action components"
            )
        if engine.uses_state:
            if not s.state_joints:
                s.state_joints = list(engine.stats.joint_names)
            if len(s.state_joints) != engine.state_dim:
                raise ConfigureError(
                    f"parameter 'state_joints' names {len(s.state_joints)} "
                    f"joints but the model's state has {engine.state_dim} values"
                )
        backbone = engine.config.backbone
        if s.engine == "remote":
            tokenizer = getattr(engine, "tokenizer", None)
        else:
            try:
                tokenizer = checkpoint_tokenizer(backbone.tokenizer, backbone.path, s.model_path)
            except Exception as exc:  # the engine loaded it, so this is a file that changed under us: say so
                raise ConfigureError(f"cannot load the tokenizer of '{s.model_path}': {exc}") from None
        return ModelInputs(
            image_size=engine.config.image_size,
            uses_hand=engine.uses_hand,
            uses_state=engine.uses_state,
            tokenizer=tokenizer,
            max_instruction_tokens=backbone.max_instruction_tokens,
        )

    def _build_loops(self, s: Settings) -> None:
        assert self.inputs is not None and self.supervisor is not None and self.scheduler is not None
        cmd_qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        # shadow mode: cmd_vel is never created, so nothing this node does can reach the base
        topic = "~/cmd_vel_shadow" if s.output_mode == "shadow" else s.cmd_vel_topic
        self._cmd_pub = self.create_lifecycle_publisher(TwistStamped if s.stamped else Twist, topic, cmd_qos)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        if s.operator_cmd_topic:
            self.shadow = ShadowComparison(
                topic=self.resolve_topic_name(s.operator_cmd_topic),
                fields=s.action_fields,
                window_s=s.agreement_window_s,
                max_age_s=s.input_timeout_s,
                clock=self.now,
            )
            self._agreement_pub = self.create_publisher(DiagnosticStatus, "~/agreement", 10)
        self.output = CommandPublisher(
            self._cmd_pub,
            fields=s.action_fields,
            stamped=s.stamped,
            frame_id=s.frame_id,
            clock_ns=self._loop_clock.now_ns,
        )
        self.watchdog = Watchdog(
            stall_s=s.clock_stall_timeout_s,
            clock=self.now,
            sim_time=lambda: bool(self.get_parameter("use_sim_time").value),
            inputs=self.inputs,
            output=self.output,
            status=self.status,
        )
        self.enable = OperatorEnable(
            required=s.require_enable,
            timeout_s=s.enable_timeout_s,
            heartbeat_topic=self.resolve_topic_name(s.enable_topic),
            joy_topic=self.resolve_topic_name(s.enable_joy_topic) if s.enable_joy_topic else "",
            joy_button=s.enable_joy_button,
            clock=self.now,
            status=self.status,
            on_grant=self._granted,
        )
        self.plan_view = build_plan_view(self, s, scheduler=self.scheduler, inputs=self.inputs)
        self.takeover = build_takeover(
            self, s, clock=self.now, status=self.status, on_start=self._taken_over, on_end=self._handed_back
        )
        if s.record_dir:
            try:
                self.recorder, self._outcome_services = build_recorder(
                    self,
                    s,
                    clock_ns=self._loop_clock.now_ns,
                    status=self.status,
                    inputs=self.inputs,
                    takeover=self.takeover,
                )
            except OSError as exc:
                raise ConfigureError(f"parameter 'record_dir': cannot record into {s.record_dir!r}: {exc}") from None
        self.control = ControlLoop(
            rate_hz=s.control_rate_hz,
            input_timeout_s=s.input_timeout_s,
            rt_priority=s.control_rt_priority,
            clock=self._loop_clock,
            scheduler=self.scheduler,
            safety=SafetyFilter(s.safety_limits()),
            inputs=self.inputs,
            # the operator first: its grant edges are found on every tick, whatever else holds the robot
            holds=[self.enable, self.supervisor, self.watchdog, self.inputs],
            output=self.output,
            status=self.status,
            silent_causes=(NOT_ENABLED,) if s.disabled_output == "silent" else (),
            observers=[part for part in (self.shadow, self.plan_view, self.recorder) if part is not None],
            takeover=self.takeover,
        )
        self.inference = InferenceLoop(
            clock=self.now,
            input_timeout_s=s.input_timeout_s,
            use_receive_time=s.use_receive_time,
            inputs=self.inputs,
            supervisor=self.supervisor,
            scheduler=self.scheduler,
            control=self.control,
            status=self.status,
            on_plan=self.recorder.on_plan if self.recorder is not None else None,
        )
        self.diagnostics = Diagnostics(
            node_name=self.get_name(),
            settings=s,
            publisher=self._diag_pub,
            clock=self.now,
            stamp=lambda: self.get_clock().now().to_msg(),
            status=self.status,
            inputs=self.inputs,
            supervisor=self.supervisor,
            scheduler=self.scheduler,
            watchdog=self.watchdog,
            output=self.output,
            enable=self.enable,
            shadow=self.shadow,
            agreement_publisher=self._agreement_pub,
            takeover=self.takeover,
            recorder=self.recorder,
        )

    def _taken_over(self, now: float) -> None:
        """The operator has the robot (control thread): the recording marks an intervention."""
        if self.recorder is not None:
            self.recorder.intervention(True, now)

    def _handed_back(self, now: float) -> None:
        """The operator let go (control thread): a fresh plan from frames received from now on."""
        if self.scheduler is not None:
            self.scheduler.reset()
        if self.inference is not None:
            self.inference.plan_from_frames_after(now)
        if self.recorder is not None:
            self.recorder.intervention(False, now)

    def _subscribe(self, s: Settings, *, uses_hand: bool, uses_state: bool) -> None:
        assert self.inputs is not None and self.enable is not None
        self._subs += subscribe(
            self,
            s,
            inputs=self.inputs,
            enable=self.enable,
            shadow=self.shadow,
            takeover=self.takeover,
            recorder=self.recorder,
            status=self.status,
            uses_hand=uses_hand,
            uses_state=uses_state,
        )

    def _granted(self) -> None:
        """An operator granted motion: no chunk planned before the grant is ever commanded, and the wait for the
        first new chunk is a start (logged at INFO), not a stalled model."""
        if self.scheduler is not None:
            self.scheduler.reset()
        self.status.start_began(self.now())

    def _new_task(self) -> None:
        """The instruction changed or a required camera became unusable: no chunk planned before may run."""
        if self.scheduler is not None:
            self.scheduler.reset()

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        assert self.supervisor is not None and self.scheduler is not None and self.output is not None
        assert self.control is not None and self.inference is not None and self.watchdog is not None
        try:
            self.supervisor.reset()
        except Exception as exc:  # e.g. the inference process died while inactive
            self.get_logger().error(f"activate failed: the engine cannot reset: {exc}")
            return TransitionCallbackReturn.FAILURE
        ret = super().on_activate(state)  # enables the lifecycle publisher
        self.scheduler.reset()
        if self.enable is not None:
            self.enable.reset()
        self.output.open()
        self.inference.start()
        self.control.start()
        self.watchdog.start()
        if self.plan_view is not None:
            self.plan_view.start()
        if self.recorder is not None:
            self.recorder.start_episode()
        self.get_logger().info("active: publishing commands")
        return ret

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        self._halt()
        ret = super().on_deactivate(state)
        if ret == TransitionCallbackReturn.SUCCESS and self.fatal_reason:
            return TransitionCallbackReturn.ERROR
        return ret

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        if self.output is not None and self.output.is_open():
            self._halt()
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: State) -> TransitionCallbackReturn:
        self._stop_loops()
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def _halt(self) -> None:
        """Stop the loops and publish zero as the last command (publisher still active)."""
        self._stop_loops()
        if self.output is not None:
            self.output.final_zero()
            self.get_logger().info("inactive: zero command published")
        if self.takeover is not None:
            self.takeover.end(self.now())  # an intervention open at deactivation ends here
        if self.recorder is not None:
            self.recorder.pause()  # the episode stays open for its outcome until the next activation or cleanup

    def _stop_loops(self) -> None:
        if self.output is not None:
            self.output.close()  # no control command from here on, whatever the threads are doing
        for part in (self.inference, self.control, self.watchdog, self.plan_view):
            if part is not None:
                part.stop()

    def _go_to_error(self, reason: str) -> None:
        """Leave active through the lifecycle error state (deactivate returns ERROR; on_error frees everything and
        the node ends unconfigured, as ros2/demos lifecycle_py does), on a thread of its own: the caller is one of
        the loops that the transition joins."""
        self.fatal_reason = reason
        self.get_logger().fatal(f"going to the lifecycle error state: {reason}")

        def run() -> None:
            self.trigger_deactivate()
            if self.exit_on_error:
                self.shutdown_requested.set()

        threading.Thread(target=run, name="robovlm-error", daemon=True).start()

    def _release(self) -> None:
        """Free what configure made (cleanup, shutdown, error, a failed configure)."""
        gc.unfreeze()  # back in sight of the collector, to be freed with the parts
        if self.diagnostics is not None:
            self.diagnostics.stop()
        for sub in self._subs:
            self.destroy_subscription(sub)
        for srv in self._outcome_services:
            self.destroy_service(srv)
        self._outcome_services = []
        if self._cmd_pub is not None:
            self.destroy_lifecycle_publisher(self._cmd_pub)
        view_pubs = self.plan_view.publishers() if self.plan_view is not None else []
        for pub in (self._diag_pub, self._agreement_pub, *view_pubs):
            if pub is not None:
                self.destroy_publisher(pub)
        self._subs, self._cmd_pub, self._diag_pub, self._agreement_pub = [], None, None, None
        if self.supervisor is not None:
            self.supervisor.close()
        if self.recorder is not None:
            self.recorder.close()
        self.settings = self.supervisor = self.inputs = self.scheduler = None
        self.shadow = self.plan_view = self.takeover = self.recorder = None
        self.output = self.watchdog = self.enable = self.control = self.inference = self.diagnostics = None
