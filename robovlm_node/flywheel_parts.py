"""The node's data-flywheel parts, built on configure from its settings: the operator's takeover (``takeover.py``)
and the rollout recorder (``recorder.py``) with its outcome services. Kept apart from ``node.py`` (the lifecycle) as
``plan_view.build_plan_view`` is."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from rclpy.node import Node
from std_srvs.srv import Trigger

from robovlm.data.rollout import OUTCOMES

from .inputs import Inputs
from .recorder import GB, RolloutRecorder, recorder_info
from .settings import Settings
from .status import NodeStatus
from .takeover import Takeover


def build_takeover(
    node: Node,
    s: Settings,
    *,
    clock: Callable[[], float],
    status: NodeStatus,
    on_start: Callable[[float], None],
    on_end: Callable[[float], None],
) -> Takeover | None:
    """A takeover part when the operator has a way to take over (``operator_cmd_topic``, ``takeover_joy_button``);
    in shadow mode it only holds the operator's newest command (the recorder's labels)."""
    if not (s.operator_cmd_topic or s.takeover_joy_button >= 0):
        return None
    return Takeover(
        shadow=s.output_mode == "shadow",
        timeout_s=s.takeover_timeout_s,
        operator_topic=node.resolve_topic_name(s.operator_cmd_topic) if s.operator_cmd_topic else "",
        joy_topic=node.resolve_topic_name(s.enable_joy_topic) if s.enable_joy_topic else "",
        joy_button=s.takeover_joy_button,
        forward=s.takeover_forward,
        clock=clock,
        status=status,
        on_start=on_start,
        on_end=on_end,
    )


def build_recorder(
    node: Node,
    s: Settings,
    *,
    clock_ns: Callable[[], int],
    status: NodeStatus,
    inputs: Inputs,
    takeover: Takeover | None,
) -> tuple[RolloutRecorder, list[Any]]:
    """The recorder and its ``~/mark_success``, ``~/mark_failure``, ``~/mark_aborted`` services (``std_srvs/
    Trigger``: an operator GUI's buttons; ``~/outcome`` takes the same with a note). ``OSError``: ``record_dir``
    cannot be made."""
    log = node.get_logger()
    if s.output_mode == "shadow" and not s.operator_cmd_topic:
        log.warning(
            "record_dir in shadow mode without operator_cmd_topic: the recordings hold no command the base "
            "executed, so they cannot train (set operator_cmd_topic to the teleop's command)"
        )
    if s.takeover_joy_button >= 0 and not s.operator_cmd_topic:
        log.warning(
            "takeover by joystick without operator_cmd_topic: interventions are marked but their commands are "
            "not recorded (set operator_cmd_topic to the teleop's command)"
        )
    recorder = RolloutRecorder(
        directory=Path(s.record_dir).expanduser(),
        max_bytes=int(s.record_max_gb * GB),
        full_frames=s.record_full_frames,
        image_size=inputs.model.image_size,
        fields=s.action_fields,
        info=recorder_info(
            node=node.get_name(), mode=s.output_mode, model=s.server_url if s.engine == "remote" else s.model_path
        ),
        clock_ns=clock_ns,
        status=status,
        instruction=lambda: inputs.instruction().text,
        takeover=takeover,
    )

    def service(label: str) -> Any:
        def mark(request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
            error = recorder.on_outcome(label)
            response.success, response.message = error is None, error or f"outcome {label} recorded"
            return response

        return node.create_service(Trigger, f"~/mark_{label}", mark)

    return recorder, [service(label) for label in OUTCOMES]
