"""NodeStatus: the counters and recent events that every part of the node reports to and diagnostics reads.

One object, shared by reference and created with the node (faults are counted before configure too): parts call
``count`` (a fault, logged at most once per 5 s per cause), ``flipped`` (a condition that began or ended, for
messages logged once each way), ``tick`` (one published command and why it was shaped) and the ``add`` of its event
windows. Readers take ``snapshot()``, a copy made under the lock, so no reader iterates a dict another thread writes.
It also holds the start state (activated, still waiting for inputs and the first chunk), which the control loop ends
and the watchdog reads. No ROS import: the loops that report here are tested without rclpy.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol

from robovlm.runtime.metrics import EventWindow
from robovlm.runtime.safety import STOP_CAUSES as SAFETY_STOP_CAUSES

STOP_CAUSES = (*SAFETY_STOP_CAUSES, "control_error")
"""Why a published command was zero: the safety filter's causes and a control tick that raised."""
LOG_EVERY_S = 5.0
"""A counted fault is logged at most this often per cause (wall time, so a paused sim clock still logs)."""


class Log(Protocol):
    """The logger the parts write to: the node's ROS logger, or ``logging.Logger`` in tests."""

    def debug(self, message: str) -> Any: ...
    def info(self, message: str) -> Any: ...
    def warning(self, message: str) -> Any: ...
    def error(self, message: str) -> Any: ...
    def fatal(self, message: str) -> Any: ...


@dataclass(frozen=True)
class StatusSnapshot:
    """The counters at one instant (copies)."""

    faults: dict[str, int]
    stops: dict[str, int]
    """Published commands that were zero, per cause (``STOP_CAUSES``), since configure."""
    control_ticks: int
    last_cause: str | None
    control_scheduling: str


class NodeStatus:
    def __init__(self, log: Log) -> None:
        self.log = log
        self._lock = threading.Lock()
        self._faults: dict[str, int] = {}
        self._last_log: dict[str, float] = {}  # cause -> wall time it was last logged
        self._transitions: set[str] = set()  # conditions that began and have not ended (``flipped``)
        self._stops: dict[str, int] = dict.fromkeys(STOP_CAUSES, 0)
        self._control_ticks = 0
        self._last_cause: str | None = None
        self._waiting_since: float | None = None  # activation time, until the first command that is not held
        self.control_scheduling = "not started"
        self.control_events = EventWindow(400)  # times of published commands
        self.infer_events = EventWindow(200)  # (time, model step latency s)
        self.e2e_events = EventWindow(200)  # (time, camera stamp -> first command using the frame, s)

    def count(self, cause: str, message: str, *, error: bool = False, log: bool = True) -> None:
        """Count a fault and log it at most once per ``LOG_EVERY_S`` per cause."""
        with self._lock:
            self._faults[cause] = n = self._faults.get(cause, 0) + 1
            t = time.monotonic()
            log = log and t - self._last_log.get(cause, -math.inf) >= LOG_EVERY_S
            if log:
                self._last_log[cause] = t
        if log:
            text = f"[{cause}] {message} (count {n})"
            if error:  # rclpy ties one severity to each call site: keep the two calls apart
                self.log.error(text)
            else:
                self.log.warning(text)

    def flipped(self, key: str, active: bool) -> bool:
        """Whether a condition just began or ended; the caller logs it once each way (and builds the message only
        then: these checks run per frame and per watchdog tick)."""
        with self._lock:
            if active == (key in self._transitions):
                return False
            if active:
                self._transitions.add(key)
            else:
                self._transitions.discard(key)
            return True

    def tick(self, cause: str | None, now: float) -> None:
        """One command published at ``now``; ``cause`` says why it was zeroed or shaped (None: passed through)."""
        self.control_events.add(now)
        with self._lock:
            self._control_ticks += 1
            self._last_cause = cause
            if cause in self._stops:
                self._stops[cause] += 1

    def held(self, cause: str) -> None:
        """A cause the control loop found outside a published tick (the watchdog's stalled clock): shown as the last
        cause until the next tick."""
        with self._lock:
            self._last_cause = cause

    def configured(self) -> None:
        """A new configuration: stop counts, ticks and open conditions start over (fault counts do not)."""
        with self._lock:
            self._stops = dict.fromkeys(STOP_CAUSES, 0)
            self._control_ticks, self._last_cause = 0, None
            self._transitions.clear()
            self._waiting_since = None
        self.control_scheduling = "not started"

    # ----------------------------------------------------------------------------------------------- start state
    def start_began(self, now: float) -> None:
        """Activated: the robot is held until every required input has arrived and the model has planned."""
        with self._lock:
            self._waiting_since = now
            self._transitions.discard("startup_slow")

    def start_ended(self) -> None:
        with self._lock:
            self._waiting_since = None

    def waiting_since(self) -> float | None:
        """The activation time while the node is still starting, else None."""
        with self._lock:
            return self._waiting_since

    # ----------------------------------------------------------------------------------------------- readers
    @property
    def faults(self) -> dict[str, int]:
        with self._lock:
            return dict(self._faults)

    def fault_count(self, cause: str) -> int:
        with self._lock:
            return self._faults.get(cause, 0)

    def snapshot(self) -> StatusSnapshot:
        with self._lock:
            return StatusSnapshot(
                faults=dict(self._faults),
                stops=dict(self._stops),
                control_ticks=self._control_ticks,
                last_cause=self._last_cause,
                control_scheduling=self.control_scheduling,
            )
