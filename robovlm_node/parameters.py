"""The node's parameters: one table of name, type, default, range and description; declaration; validation.
(Over 400 lines because the table holds every parameter with its documentation, the one place each is written.)

Every parameter is declared with its real type (no ``dynamic_typing``) and, where it has one, an
``IntegerRange``/``FloatingPointRange``, so a bad value is refused when it is set and the refusal names it.
All but ``instruction`` are ``read_only``: they are read on configure (topics, model, limits), so they are set at
start-up (params file, ``-p name:=value``) and changed by restarting the node. An integer given for a floating-point
parameter (``-p control_rate_hz:=20``) is taken as a float. Overrides that name no declared parameter are reported
with the closest valid name.
Cross-parameter rules (an action field per limit, distinct joints) are checked by ``validate_settings`` on configure.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.exceptions import NameValidationException, ParameterUninitializedException
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.validate_topic_name import validate_topic_name

from robovlm.data.roles import NODE_TOPICS
from robovlm.runtime.engine import DTYPES, ENGINES
from robovlm.runtime.scheduler import MODES

from .convert import TWIST_FIELDS
from .settings import Settings

T = Parameter.Type
DEFAULT_ENGINE_THREADS = 1
"""Measured on the 2-core development machine with two CPU-bound jobs beside the node (``make soak --load``): one
thread keeps a fresh chunk on nearly every tick, torch's default (one per core) oversubscribes the CPU and stops
the robot most of the time. On a GPU the model's CPU threads matter little; on a bigger CPU, raise it."""


class ParameterError(ValueError):
    """A node parameter is invalid; the message names it."""


@dataclass(frozen=True)
class Spec:
    type: Parameter.Type
    default: Any
    """None: declared without a value (an empty list, which ROS cannot type)."""
    description: str
    range: tuple[float, float] | None = None
    """Inclusive bounds of a numeric parameter."""
    read_only: bool = True
    one_of: tuple[str, ...] | None = None
    """The values a string parameter may take."""


PARAMETERS: dict[str, Spec] = {
    "model_path": Spec(
        T.STRING,
        "",
        "checkpoint directory (config.json, model.safetensors, stats.json), or "
        "hf://owner/name: a Hugging Face Hub model in the local Hub cache",
    ),
    "device": Spec(T.STRING, "cpu", "inference device", one_of=("cpu", "cuda")),
    "engine": Spec(T.STRING, "torch", "inference engine", one_of=tuple(ENGINES)),
    "dtype": Spec(
        T.STRING,
        "float32",
        "torch engine precision (weights cast once at load); an ONNX export's precision is chosen at export",
        one_of=tuple(DTYPES),
    ),
    "onnx_tensorrt": Spec(
        T.BOOL, False, "onnxruntime on cuda: TensorRT execution provider first (CUDA for what it cannot run)"
    ),
    "onnx_cache_dir": Spec(
        T.STRING,
        "",
        "directory for TensorRT engine caches (empty: no cache; building the "
        "engines then takes minutes at every configure)",
    ),
    "server_url": Spec(
        T.STRING,
        "",
        "engine remote: http://HOST:PORT of `robovlm serve` (https:// behind a TLS proxy or with --tls-cert)",
    ),
    "server_token_file": Spec(
        T.STRING, "", "engine remote: file holding the server's bearer token (mode 600; never the token itself)"
    ),
    "server_timeout_s": Spec(
        T.DOUBLE,
        1.0,
        "engine remote: a step with no reply within this is a lost server: the robot is held and the node "
        "retries with backoff, s",
        (0.01, 60.0),
    ),
    "jpeg_quality": Spec(
        T.INTEGER,
        0,
        "engine remote: 0 sends frames raw (at the model's size, resized on the robot), 1-100 as JPEG of that "
        "quality (about 10x fewer bytes; actions differ slightly from raw)",
        (0, 100),
    ),
    "engine_process": Spec(
        T.BOOL,
        True,
        "run the model in its own process (keeps the control loop's timing and "
        "survives model crashes); false: a thread in this process",
    ),
    "instruction": Spec(
        T.STRING,
        "",
        "language instruction; may change at runtime (also settable on "
        "instruction_topic). Longer than the checkpoint's max_instruction_tokens: "
        "refused, and the robot stops until a valid one arrives",
        read_only=False,
    ),
    "engine_threads": Spec(
        T.INTEGER,
        DEFAULT_ENGINE_THREADS,
        "CPU threads of the model (torch intra-op, OpenMP, "
        "MKL). 1 measured best on a 2-core computer with other "
        "jobs running (make soak --load)",
        (1, 256),
    ),
    "engine_step_timeout_s": Spec(
        T.DOUBLE,
        5.0,
        "a model step longer than this means the engine process hung: it is killed and restarted, s",
        (0.1, 3600.0),
    ),
    "engine_max_restarts": Spec(
        T.INTEGER,
        3,
        "engine restarts allowed within engine_restart_window_s; the next "
        "failure sends the node to the lifecycle error state",
        (0, 1000),
    ),
    "engine_restart_window_s": Spec(T.DOUBLE, 60.0, "window over which engine failures are counted, s", (1.0, 86400.0)),
    "max_image_pixels": Spec(
        T.INTEGER,
        4_194_304,
        "camera frames with more pixels (width x height) are refused before decoding (default 4 MP)",
        (1, 1_000_000_000),
    ),
    "min_image_side_px": Spec(
        T.INTEGER,
        32,
        "camera frames narrower or lower than this are refused "
        "(image_too_small) and stop the robot until a usable frame arrives",
        (1, 65535),
    ),
    "min_image_contrast": Spec(
        T.DOUBLE,
        2.0,
        "a frame whose luminance standard deviation (0-255) is below this is "
        "one colour (covered lens, dead sensor: blank_image) and stops the "
        "robot; 0: off",
        (0.0, 128.0),
    ),
    "max_saturated_fraction": Spec(
        T.DOUBLE,
        0.95,
        "a frame with more than this share of pixels clipped to black or "
        "white (blown exposure: saturated_image) stops the robot; 1: off",
        (0.01, 1.0),
    ),
    "max_frozen_s": Spec(
        T.DOUBLE,
        2.0,
        "a camera whose frames keep arriving with the same bytes for longer than this stops the robot (a frozen "
        "driver); 0: off, for a camera that only sends when the scene changes, s",
        (0.0, 60.0),
    ),
    "use_receive_time": Spec(
        T.BOOL,
        False,
        "time camera frames and joint states by arrival, ignoring header "
        "stamps (drivers whose clocks are not synchronised with this computer); "
        "warns on configure",
    ),
    "max_stamp_lead_s": Spec(
        T.DOUBLE,
        0.1,
        "a camera frame or joint state stamped further ahead of the node clock "
        "than this is a future_stamp fault and stops the robot, s",
        (0.0, 60.0),
    ),
    "clock_stall_timeout_s": Spec(
        T.DOUBLE,
        1.0,
        "the node clock not advancing for this long (steady time) while "
        "active, e.g. a stalled /clock under use_sim_time: one zero command, "
        "an error log and diagnostics ERROR, s",
        (0.05, 600.0),
    ),
    "instruction_topic": Spec(
        T.STRING, NODE_TOPICS["instruction"], "std_msgs/String topic (latched) that sets the instruction"
    ),
    "control_rate_hz": Spec(T.DOUBLE, 20.0, "rate of cmd_vel publication, Hz", (0.1, 1000.0)),
    "head_camera_topic": Spec(T.STRING, NODE_TOPICS["head"], "head camera topic"),
    "head_camera_compressed": Spec(T.BOOL, False, "head camera publishes sensor_msgs/CompressedImage, not Image"),
    "hand_camera_topic": Spec(T.STRING, NODE_TOPICS["hand"], "gripper (hand) camera topic"),
    "hand_camera_compressed": Spec(T.BOOL, False, "hand camera publishes sensor_msgs/CompressedImage, not Image"),
    "require_hand_camera": Spec(
        T.BOOL,
        False,
        "stop when the hand camera is stale; false: the model's missing_hand "
        "policy (a stale hand camera is still a diagnostics WARN)",
    ),
    "joint_states_topic": Spec(T.STRING, NODE_TOPICS["joint_states"], "sensor_msgs/JointState topic"),
    "state_joints": Spec(
        T.STRING_ARRAY, None, "joint names in state order; unset: the checkpoint's stats.json joint_names"
    ),
    "cmd_vel_topic": Spec(T.STRING, NODE_TOPICS["cmd_vel"], "velocity command topic"),
    "stamped": Spec(T.BOOL, False, "publish geometry_msgs/TwistStamped instead of Twist"),
    "frame_id": Spec(T.STRING, "base_link", "frame_id of TwistStamped commands"),
    "action_fields": Spec(T.STRING_ARRAY, ["linear.x", "linear.y"], "Twist field for each action component"),
    "max_velocity": Spec(
        T.DOUBLE_ARRAY, [0.5], "velocity limit per action field (one value: all fields), m/s or rad/s"
    ),
    "max_accel": Spec(
        T.DOUBLE_ARRAY, [1.0], "acceleration limit per action field (one value: all fields), m/s^2 or rad/s^2"
    ),
    "input_timeout_s": Spec(T.DOUBLE, 0.5, "stop when a required input is older than this, s", (0.001, 60.0)),
    "chunk_timeout_s": Spec(
        T.DOUBLE, 1.0, "stop when the newest action chunk is older than this (model stalled), s", (0.001, 60.0)
    ),
    "chunk_mode": Spec(T.STRING, "ensemble", "action selection from the chunks", one_of=tuple(MODES)),
    "ensemble_decay": Spec(T.DOUBLE, 0.01, "temporal-ensembling weight decay per chunk (ACT uses 0.01)", (0.0, 100.0)),
    "control_rt_priority": Spec(
        T.INTEGER,
        10,
        "SCHED_FIFO priority of the control thread (1-99); 0: normal "
        "scheduling. Needs CAP_SYS_NICE or an rtprio limit; without it the "
        "node warns and runs unprivileged",
        (0, 99),
    ),
    "require_enable": Spec(
        T.BOOL,
        False,
        "drive only while an operator grants motion (the heartbeat on enable_topic and, when enable_joy_topic is "
        "set, a held deadman button); for a physical robot (docs/robot.md)",
    ),
    "enable_topic": Spec(
        T.STRING, "~/enable", "std_msgs/Bool heartbeat that grants motion while true and newer than enable_timeout_s"
    ),
    "enable_timeout_s": Spec(
        T.DOUBLE, 0.5, "a heartbeat or Joy message older than this revokes motion, s", (0.01, 10.0)
    ),
    "enable_joy_topic": Spec(
        T.STRING, "", "sensor_msgs/Joy whose button enable_joy_button must be held as a deadman; empty: none"
    ),
    "enable_joy_button": Spec(
        T.INTEGER,
        -1,
        "index of the deadman button in Joy.buttons (needed with enable_joy_topic); not teleop_twist_joy's own "
        "enable button, whose zeros twist_mux would let win",
        (-1, 255),
    ),
    "disabled_output": Spec(
        T.STRING,
        "zero",
        "while motion is not granted: publish zeros, or one zero and then nothing (silent: for twist_mux, "
        "whose lower-priority inputs a zero stream would block)",
        one_of=("zero", "silent"),
    ),
    "output_mode": Spec(
        T.STRING,
        "drive",
        "drive: publish on cmd_vel; shadow: never create cmd_vel, publish on ~/cmd_vel_shadow (beside teleop, "
        "compared with operator_cmd_topic)",
        one_of=("drive", "shadow"),
    ),
    "operator_cmd_topic": Spec(
        T.STRING,
        "",
        "the operator's (teleop) velocity command: compared with the policy's, recorded as what the base executed "
        "while the operator has the robot, and in drive mode a fresh command on it is a takeover unless "
        "takeover_joy_button is set (docs/flywheel.md); empty: none",
    ),
    "operator_cmd_stamped": Spec(T.BOOL, False, "operator_cmd_topic carries TwistStamped, not Twist"),
    "takeover_joy_button": Spec(
        T.INTEGER,
        -1,
        "button of the Joy on enable_joy_topic that hands the robot to the operator while held (drive mode); -1: "
        "the operator takes over by publishing on operator_cmd_topic",
        (-1, 255),
    ),
    "takeover_timeout_s": Spec(
        T.DOUBLE,
        0.3,
        "the operator has the robot while their newest command (or takeover Joy message) is newer than this, s",
        (0.01, 10.0),
    ),
    "takeover_forward": Spec(
        T.BOOL,
        False,
        "while taken over, publish the operator's command on cmd_vel within the velocity and acceleration limits "
        "(a robot without twist_mux); false: publish nothing, the mux passes the operator's",
    ),
    "record_dir": Spec(
        T.STRING,
        "",
        "record each activation as a rosbag2 (MCAP) episode here: frames, joint states, plans, commands with their "
        "source, interventions, outcome (docs/flywheel.md); empty: no recording",
    ),
    "record_max_gb": Spec(
        T.DOUBLE, 20.0, "recording stops (the robot drives on) when record_dir holds this much, GB", (1e-6, 1e6)
    ),
    "record_full_frames": Spec(
        T.BOOL, False, "record camera frames as sent; false: at the model's input size, as the model takes them"
    ),
    "agreement_window_s": Spec(
        T.DOUBLE, 10.0, "the policy's agreement with the operator is reported over this window, s", (0.5, 3600.0)
    ),
    "visualization_rate_hz": Spec(
        T.DOUBLE,
        5.0,
        "~/plan, ~/executed and ~/debug_image at most this often, each only while subscribed; 0: not created",
        (0.0, 30.0),
    ),
    "executed_window_s": Spec(T.DOUBLE, 5.0, "~/executed shows the commands of this many seconds, s", (0.5, 60.0)),
    "autostart": Spec(T.BOOL, False, "configure and activate on start (for use without a lifecycle manager)"),
}
RUNTIME_CHANGEABLE = {name for name, spec in PARAMETERS.items() if not spec.read_only}
# Declared by rclpy itself, or consumed by rcl: never "unknown".
ROS_OWN = {"use_sim_time", "start_type_description_service", "start_parameter_event_publisher"}

_TYPE_WORDS = {
    T.STRING: "a string",
    T.BOOL: "true or false",
    T.DOUBLE: "a number",
    T.INTEGER: "an integer",
    T.STRING_ARRAY: "a list of strings",
    T.DOUBLE_ARRAY: "a list of numbers",
}


def descriptor(name: str, spec: Spec) -> ParameterDescriptor:
    d = ParameterDescriptor(name=name, type=spec.type.value, description=spec.description, read_only=spec.read_only)
    if spec.range is not None and spec.type == T.DOUBLE:
        d.floating_point_range = [FloatingPointRange(from_value=float(spec.range[0]), to_value=float(spec.range[1]))]
    elif spec.range is not None and spec.type == T.INTEGER:
        d.integer_range = [IntegerRange(from_value=int(spec.range[0]), to_value=int(spec.range[1]), step=1)]
    if spec.one_of is not None:
        d.additional_constraints = "one of: " + ", ".join(spec.one_of)
    return d


def coerce(name: str, spec: Spec, value: Any) -> Any:
    """``value`` as ``spec.type`` (integers widen to floats), or ``ParameterError`` naming the parameter."""

    def is_num(x: Any) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool)

    ok: Callable[[Any], bool] = {
        T.STRING: lambda v: isinstance(v, str),
        T.BOOL: lambda v: isinstance(v, bool),
        T.INTEGER: lambda v: isinstance(v, int) and not isinstance(v, bool),
        T.DOUBLE: is_num,
        T.STRING_ARRAY: lambda v: isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v),
        T.DOUBLE_ARRAY: lambda v: isinstance(v, (list, tuple)) and all(is_num(x) for x in v),
    }[spec.type]
    if not ok(value):
        raise ParameterError(f"parameter '{name}' must be {_TYPE_WORDS[spec.type]}, got {value!r}")
    if spec.type == T.DOUBLE:
        value = float(value)
        if not math.isfinite(value):
            raise ParameterError(f"parameter '{name}' must be finite, got {value}")
    elif spec.type == T.DOUBLE_ARRAY:
        value = [float(x) for x in value]
    elif spec.type == T.STRING_ARRAY:
        value = list(value)
    if spec.range is not None and not spec.range[0] <= value <= spec.range[1]:
        raise ParameterError(f"parameter '{name}' must be in [{spec.range[0]}, {spec.range[1]}], got {value}")
    if spec.one_of is not None and value not in spec.one_of:
        raise ParameterError(f"parameter '{name}' must be one of {list(spec.one_of)}, got {value!r}")
    return value


def overrides_of(node: Node) -> dict[str, Any]:
    """The values given at start-up (params files, ``-p``, ``parameter_overrides``) for this node.

    rclpy has no public accessor for them; ``_parameter_overrides`` is where ``Node.__init__`` collects them.
    """
    return {name: p.value for name, p in getattr(node, "_parameter_overrides", {}).items()}


def declare_parameters(node: Node) -> None:
    """Declare every parameter with its descriptor; ``ParameterError`` lists every bad start-up value."""
    given = overrides_of(node)
    errors: list[str] = []
    for name, spec in PARAMETERS.items():
        value = spec.default
        if name in given:
            try:
                value = coerce(name, spec, given[name])
            except ParameterError as exc:
                errors.append(str(exc))
        d = descriptor(name, spec)
        if value is None or value == [] and spec.type in (T.STRING_ARRAY, T.DOUBLE_ARRAY):
            node.declare_parameter(name, spec.type, d, ignore_override=True)  # typed, unset: ROS cannot type []
        else:
            node.declare_parameter(name, value, d, ignore_override=True)
    if errors:
        raise ParameterError("; ".join(errors))


def unknown_overrides(node: Node) -> list[str]:
    """One line per start-up override that names no declared parameter, with the closest valid name."""
    lines = []
    known = list(PARAMETERS)
    for name in sorted(overrides_of(node)):
        if name in PARAMETERS or name in ROS_OWN or name.startswith("qos_overrides."):
            continue
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
        lines.append(
            f"parameter override '{name}' matches no parameter of this node and is ignored"
            + (f"; did you mean '{close[0]}'?" if close else "")
        )
    return lines


def set_refusal(node: Node, param: Parameter[Any]) -> str | None:
    """Why a runtime set of ``param`` (from ``ros2 param set`` or any parameter client) is refused, in words that
    name the parameter, or None when rclpy's own checks and the node's callback should decide.

    rclpy's descriptor checks run before any node callback and answer ``Wrong parameter type, expected '4' got '2'``
    or ``Invalid access to undeclared parameter(s): []``; the node checks these cases first and says which parameter
    and why."""
    name = param.name
    spec = PARAMETERS.get(name)
    if spec is None and not node.has_parameter(name):
        close = difflib.get_close_matches(name, list(PARAMETERS), n=1, cutoff=0.5)
        return f"no parameter '{name}' on this node" + (f"; did you mean '{close[0]}'?" if close else "")
    if spec is None:  # rclpy's own (use_sim_time, ...): its descriptor's type, then the node's callback
        d = node.describe_parameter(name)
        if d.dynamic_typing or param.type_.value == d.type:
            return None
        want = _TYPE_WORDS.get(T(d.type), T(d.type).name.lower())
        return f"parameter '{name}' must be {want}, got {_shown(param)}"
    if spec.read_only:
        return (
            f"parameter '{name}' is read on configure and cannot change at runtime: set it at start-up "
            f"(-p {name}:=VALUE or the params file) and restart the node"
        )
    if param.type_ != spec.type:
        return f"parameter '{name}' must be {_TYPE_WORDS[spec.type]}, got {_shown(param)}"
    return None


def _shown(param: Parameter[Any]) -> str:
    return "no value" if param.type_ == T.NOT_SET else f"{param.value!r} ({param.type_.name.lower()})"


def read_parameters(node: Node) -> dict[str, Any]:
    """Current values; an unset list parameter reads as []."""
    out = {}
    for name in PARAMETERS:
        try:
            out[name] = node.get_parameter(name).value
        except ParameterUninitializedException:  # a list declared without a value
            out[name] = []
    return out


def validate_settings(raw: dict[str, Any]) -> Settings:
    """Check every parameter; raise ``ParameterError`` naming the first bad one."""
    v = {name: coerce(name, spec, [] if raw[name] is None else raw[name]) for name, spec in PARAMETERS.items()}
    if v["engine"] == "remote":
        if not v["server_url"] or not v["server_token_file"]:
            raise ParameterError(
                "engine 'remote' needs parameters 'server_url' (http://HOST:PORT of robovlm serve) and "
                "'server_token_file'"
            )
        if v["dtype"] != "float32" or v["onnx_tensorrt"]:
            raise ParameterError("parameters 'dtype' and 'onnx_tensorrt' are the server's choice with engine 'remote'")
    elif not v["model_path"]:
        raise ParameterError("parameter 'model_path' is empty: set it to a checkpoint directory")
    if v["engine"] == "onnxruntime" and v["dtype"] != "float32":
        raise ParameterError(
            f"parameter 'dtype' ({v['dtype']}) applies to the torch engine; an ONNX export's "
            "precision is chosen when exporting (robovlm export --dtype fp16)"
        )
    if v["onnx_tensorrt"] and (v["engine"] != "onnxruntime" or v["device"] != "cuda"):
        raise ParameterError("parameter 'onnx_tensorrt' needs engine 'onnxruntime' and device 'cuda'")
    if v["enable_joy_topic"] and v["enable_joy_button"] < 0:
        raise ParameterError(
            "parameter 'enable_joy_topic' is set but 'enable_joy_button' is not: name the deadman button's index "
            "in Joy.buttons (docs/robot.md says which)"
        )
    if v["takeover_joy_button"] >= 0 and not v["enable_joy_topic"]:
        raise ParameterError(
            "parameter 'takeover_joy_button' is set but 'enable_joy_topic' is not: name the Joy topic it is read from"
        )
    if v["takeover_forward"] and not v["operator_cmd_topic"]:
        raise ParameterError("parameter 'takeover_forward' needs 'operator_cmd_topic': the commands it forwards")
    topics = ["instruction_topic", "head_camera_topic", "hand_camera_topic", "joint_states_topic", "cmd_vel_topic"]
    topics += ["enable_topic"] + (["enable_joy_topic"] if v["enable_joy_topic"] else [])
    topics += ["operator_cmd_topic"] if v["operator_cmd_topic"] else []
    for name in topics:
        if not v[name].strip():
            raise ParameterError(f"parameter '{name}' is empty")
        try:
            validate_topic_name(v[name])
        except NameValidationException as exc:
            why = str(exc).splitlines()[0].split(": ", 1)[-1]
            raise ParameterError(f"parameter '{name}' is not a valid ROS topic name ({v[name]!r}): {why}") from None
    fields = v["action_fields"]
    if not fields or any(f not in TWIST_FIELDS for f in fields) or len(set(fields)) != len(fields):
        raise ParameterError(
            f"parameter 'action_fields' must be distinct names from {list(TWIST_FIELDS)}, got {fields}"
        )
    for name in ("max_velocity", "max_accel"):
        vals = v[name]
        if len(vals) == 1:
            vals = vals * len(fields)
        if len(vals) != len(fields) or not all(math.isfinite(x) and x > 0 for x in vals):
            raise ParameterError(
                f"parameter '{name}' must hold one positive value or one per action field "
                f"({len(fields)}), got {v[name]}"
            )
        v[name] = vals
    joints = [j for j in v["state_joints"] if j != ""]
    if len(set(joints)) != len(joints):
        raise ParameterError(f"parameter 'state_joints' must be distinct joint names, got {v['state_joints']}")
    v["state_joints"] = joints
    return Settings(**v)


def reference_markdown() -> str:
    """The parameter reference (``docs/parameters.md``), written from ``PARAMETERS``; a test keeps them equal."""
    lines = [
        "# robovlm_node parameters",
        "",
        "Generated from `robovlm_node/parameters.py` (`python -m robovlm_node.parameters > docs/parameters.md`); the",
        "shipped values are in `config/robovlm.yaml`. All but `instruction` are read on configure and set at start-up.",
        "",
        "| name | type | default | allowed | description |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, spec in PARAMETERS.items():
        if spec.one_of is not None:
            allowed = " \\| ".join(f"`{v}`" for v in spec.one_of)
        elif spec.range is not None:
            allowed = f"[{spec.range[0]:g}, {spec.range[1]:g}]"
        else:
            allowed = ""
        default = "(unset)" if spec.default is None else f"`{json.dumps(spec.default)}`"
        runtime = "" if spec.read_only else " Changes at runtime."
        text = spec.description.replace("|", "\\|")
        lines.append(f"| `{name}` | {_TYPE_WORDS[spec.type]} | {default} | {allowed} | {text}{runtime} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(reference_markdown(), end="")
