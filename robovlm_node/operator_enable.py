"""OperatorEnable: motion only while an operator grants it (``require_enable``), as a deadman or a heartbeat lock does.

The ROS conventions it follows: teleop_twist_joy moves only while its enable button is held, and twist_mux's locks
treat a publisher that went silent as a stop ("if the publisher dies we will enable the lock"). Here every source
configured must grant at once (AND):

- the heartbeat, a ``std_msgs/Bool`` on ``enable_topic``: its newest message is ``true`` and newer than
  ``enable_timeout_s`` (a dead operator station, a crashed GUI, a lost Wi-Fi link all read as "revoked");
- when ``enable_joy_topic`` is set, the deadman: button ``enable_joy_button`` of the newest ``sensor_msgs/Joy`` is
  held, and that message is newer than ``enable_timeout_s`` (the joy driver publishes while a button is held; its
  ``autorepeat_rate`` must be above 1 / ``enable_timeout_s``).

A grant starts from a fresh plan: the rising edge calls ``on_grant`` (the node resets the chunk scheduler, so no
chunk planned before the grant is ever commanded) and the safety filter ramps up from the zero it held. The edge is
found in ``hold_cause``, which the control loop calls on every tick, so a heartbeat that stops arriving revokes motion
within one control period of ``enable_timeout_s``.

Owns: the newest heartbeat and Joy readings and the grant state. Talks to: ``NodeStatus`` (its log and counters),
the clock it is given, ``on_grant``. No ROS import: the node passes message fields in.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .status import NodeStatus

HOLD_CAUSE = "not_enabled"


@dataclass(frozen=True)
class EnableSnapshot:
    """What diagnostics show: whether motion is granted, why not, by which sources, since when."""

    required: bool
    granted: bool
    reason: str
    """Empty when granted; otherwise every source that does not grant, in words."""
    sources: str
    """The sources configured, in words (``heartbeat /robovlm/enable``, ``deadman button 4 of /joy``)."""
    changed_at: float | None
    """Node-clock time of the last grant or revocation (None: never granted)."""
    grants: int
    revocations: int


class OperatorEnable:
    def __init__(
        self,
        *,
        required: bool,
        timeout_s: float,
        heartbeat_topic: str,
        joy_topic: str,
        joy_button: int,
        clock: Callable[[], float],
        status: NodeStatus,
        on_grant: Callable[[], None],
    ) -> None:
        self.required = required
        self.timeout_s = timeout_s
        self.heartbeat_topic = heartbeat_topic
        self.joy_topic = joy_topic  # "" when no deadman is configured
        self.joy_button = joy_button
        self._clock = clock  # node clock, seconds
        self.status = status  # the node's, shared: counters and log
        self._on_grant = on_grant
        self._lock = threading.Lock()
        self._heartbeat: tuple[float, bool] | None = None  # (receive time, value) of the newest heartbeat
        self._joy: tuple[float, bool] | None = None  # (receive time, deadman held) of the newest Joy
        self._granted = False
        self._reason = "no heartbeat received yet"
        self._changed_at: float | None = None
        self._grants = 0
        self._revocations = 0

    # ----------------------------------------------------------------------------------------------- messages
    def on_heartbeat(self, value: bool) -> None:
        with self._lock:
            self._heartbeat = (self._clock(), bool(value))

    def on_joy(self, buttons: Sequence[int]) -> None:
        """A Joy message's ``buttons``; a message without the configured button counts as released (and is
        counted as a fault: the joystick is not the one the parameters describe)."""
        held = 0 <= self.joy_button < len(buttons) and buttons[self.joy_button] == 1
        if self.joy_button >= len(buttons):
            self.status.count(
                "enable_joy_button_missing",
                f"Joy on {self.joy_topic} has {len(buttons)} buttons; enable_joy_button {self.joy_button} is not one",
            )
        with self._lock:
            self._joy = (self._clock(), held)

    # ----------------------------------------------------------------------------------------------- state
    def reset(self) -> None:
        """On activate: the next grant found is a new grant (a fresh plan), even if the operator held it already."""
        with self._lock:
            self._granted = False

    def _why_not(self, now: float) -> str:
        """Every source that does not grant now, in words; empty when all grant."""
        reasons = []
        if self._heartbeat is None:
            reasons.append(f"no heartbeat on {self.heartbeat_topic}")
        else:
            t, value = self._heartbeat
            if now - t > self.timeout_s:
                reasons.append(f"heartbeat {self.heartbeat_topic} silent for {now - t:.2f} s (> {self.timeout_s:g} s)")
            elif not value:
                reasons.append(f"heartbeat {self.heartbeat_topic} is false")
        if self.joy_topic:
            if self._joy is None:
                reasons.append(f"no Joy on {self.joy_topic}")
            else:
                t, held = self._joy
                if now - t > self.timeout_s:
                    reasons.append(f"Joy {self.joy_topic} silent for {now - t:.2f} s (> {self.timeout_s:g} s)")
                elif not held:
                    reasons.append(f"deadman button {self.joy_button} of {self.joy_topic} released")
        return "; ".join(reasons)

    def hold_cause(self) -> str | None:
        """``not_enabled`` while motion is not granted (called by the control loop on every tick); the edges are
        logged, counted and, for a grant, start a fresh plan."""
        if not self.required:
            return None
        now = self._clock()
        with self._lock:
            reason = self._why_not(now)
            granted = not reason
            edge = granted != self._granted
            self._granted, self._reason = granted, reason
            if edge:
                self._changed_at = now
                if granted:
                    self._grants += 1
                else:
                    self._revocations += 1
        if edge and granted:
            self._on_grant()
            self.status.log.info(f"motion granted by {self.sources()}: driving from a fresh plan")
        elif edge:
            self.status.log.warning(f"motion revoked: {reason}; holding the robot")
        return None if granted else HOLD_CAUSE

    def sources(self) -> str:
        heartbeat = f"heartbeat {self.heartbeat_topic}"
        return f"{heartbeat} and deadman button {self.joy_button} of {self.joy_topic}" if self.joy_topic else heartbeat

    def snapshot(self) -> EnableSnapshot:
        with self._lock:
            return EnableSnapshot(
                required=self.required,
                granted=self._granted or not self.required,
                reason="" if not self.required else self._reason,
                sources=self.sources() if self.required else "not required",
                changed_at=self._changed_at,
                grants=self._grants,
                revocations=self._revocations,
            )
