"""Takeover: the operator takes the robot from the policy, and gives it back (drive mode).

Two ways, as robot teams run it (rosetta's ``hil_manager``, LeRobot's intervention recording):

- with a joystick (``takeover_joy_button`` >= 0): while that button of the Joy on ``enable_joy_topic`` is held, and
  that Joy message is newer than ``takeover_timeout_s``;
- without one: while the newest command on ``operator_cmd_topic`` is newer than ``takeover_timeout_s``, zeros
  included (behind twist_mux an operator holding still is still in control).

While taken over the node publishes none of its own commands: the operator's reach the base through twist_mux, or
through the node when ``takeover_forward`` is set (the operator's command, shaped by the same velocity and
acceleration limits, on ``cmd_vel``: for a robot without a mux). When the operator lets go the node resumes from a
fresh plan on frames received after the release (``on_end``). In shadow mode nothing is a takeover: the operator
drives throughout, and ``operator_command`` is what the base executed (the recorder's demonstration labels).

Owns: the operator's newest command and Joy reading, and the takeover state and counts. Talks to: the clock,
``NodeStatus`` (log), ``on_start`` and ``on_end`` (the node: the recorder's intervention marks, a fresh plan).
No ROS import: the subscriptions pass message fields in.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from robovlm.runtime.safety import OPERATOR_CAUSE

from .status import NodeStatus

CAUSE = OPERATOR_CAUSE
"""The control loop's cause for a tick the operator commanded (never a fault: not in ``STOP_CAUSES``)."""


@dataclass(frozen=True)
class TakeoverSnapshot:
    """What diagnostics show."""

    how: str
    """The takeover source in words (``button 5 of /joy``, ``commands on /cmd_vel_teleop``, ``none (shadow)``)."""
    active: bool
    interventions: int
    since: float | None
    """Node-clock time the current intervention began (None: not taken over)."""


class Takeover:
    def __init__(
        self,
        *,
        shadow: bool,
        timeout_s: float,
        operator_topic: str,
        joy_topic: str,
        joy_button: int,
        forward: bool,
        clock: Callable[[], float],
        status: NodeStatus,
        on_start: Callable[[float], None],
        on_end: Callable[[float], None],
    ) -> None:
        self.shadow = shadow  # shadow mode: the operator drives throughout; nothing is a takeover
        self.timeout_s = timeout_s
        self.operator_topic = operator_topic  # "" when none
        self.joy_topic = joy_topic
        self.joy_button = joy_button  # -1: no joystick takeover, the operator's commands decide
        self.forward = forward
        self._clock = clock
        self._status = status
        self._on_start = on_start
        self._on_end = on_end
        self._lock = threading.Lock()
        self._operator: tuple[float, np.ndarray] | None = None  # (arrival, (F,) command)
        self._joy: tuple[float, bool] | None = None  # (arrival, takeover button held)
        self._active = False
        self._since: float | None = None
        self._interventions = 0

    # ----------------------------------------------------------------------------------------------- messages
    def on_operator(self, command: np.ndarray) -> None:
        with self._lock:
            self._operator = (self._clock(), np.asarray(command, np.float64))

    def on_joy(self, buttons: Sequence[int]) -> None:
        held = 0 <= self.joy_button < len(buttons) and buttons[self.joy_button] == 1
        with self._lock:
            self._joy = (self._clock(), held)

    # ----------------------------------------------------------------------------------------------- state
    def operator_command(self, now: float) -> np.ndarray | None:
        """The operator's newest command if newer than ``takeover_timeout_s``, else None."""
        with self._lock:
            op = self._operator
        return None if op is None or now - op[0] > self.timeout_s else op[1]

    def _wants(self, now: float) -> bool:
        if self.shadow:
            return False
        if self.joy_button >= 0:
            joy = self._joy
            return joy is not None and now - joy[0] <= self.timeout_s and joy[1]
        op = self._operator
        return op is not None and now - op[0] <= self.timeout_s

    def active(self, now: float) -> bool:
        """Whether the operator has the robot now (called by the control loop on every tick, which finds the
        edges: ``on_start`` and ``on_end`` run on the control thread and must not block)."""
        with self._lock:
            wants = self._wants(now)
            edge = wants != self._active
            self._active = wants
            if edge and wants:
                self._since = now
                self._interventions += 1
            elif edge:
                self._since = None
        if edge and wants:
            self._status.log.info(f"operator took over ({self.how()}): the policy's commands are held")
            self._on_start(now)
        elif edge:
            self._status.log.info("operator let go: the policy resumes from a fresh plan on fresh frames")
            self._on_end(now)
        return wants

    def end(self, now: float) -> None:
        """The activation ends while taken over: close the intervention (the recording's mark)."""
        with self._lock:
            was, self._active, self._since = self._active, False, None
        if was:
            self._on_end(now)

    def how(self) -> str:
        if self.shadow:
            return "none (shadow mode: the operator drives)"
        if self.joy_button >= 0:
            return f"button {self.joy_button} of {self.joy_topic}"
        return f"commands on {self.operator_topic}"

    def snapshot(self) -> TakeoverSnapshot:
        with self._lock:
            return TakeoverSnapshot(
                how=self.how(), active=self._active, interventions=self._interventions, since=self._since
            )
