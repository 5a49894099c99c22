"""The last gate before a velocity command leaves the node (no ROS here; the node feeds it times and ages).

Rules, in order (the first that applies wins and is counted under its cause):
- inactive -> zero;
- a fault the caller has already found, or motion not granted (``HOLD_CAUSES``: engine down, refused instruction, an
  input with a bad header stamp, a stalled clock, a camera frame with nothing to drive on, a frozen camera, no
  operator grant) -> zero;
- a required input older than ``input_timeout_s`` (or never received) -> zero;
- no fresh action (no chunk, or the newest chunk older than ``chunk_timeout_s``, or its actions all in the past)
  -> zero;
- a non-finite action -> zero;
- otherwise clamp each component to ``+-max_velocity`` and limit its change per tick to ``max_accel * dt``.

Faults stop at once (like diff_drive_controller's brake on ``cmd_vel_timeout``): the acceleration limit shapes
normal commands only, it never delays a stop.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

HOLD_CAUSES = (
    "engine_down",
    "bad_instruction",
    "stale_stamp",
    "future_stamp",
    "clock_stalled",
    "degenerate_image",
    "frozen_camera",
    "not_enabled",
)
"""Faults found outside the filter that stop the robot until they clear."""
STOP_CAUSES = ("stale_input", "no_fresh_chunk", "nonfinite_output", *HOLD_CAUSES)
CAUSES = ("inactive", *STOP_CAUSES, "velocity_clamped", "accel_limited")
OPERATOR_CAUSE = "operator"
"""A tick an operator commanded (a takeover): the policy's command held, no fault (not in ``STOP_CAUSES``)."""


@dataclass
class SafetyLimits:
    max_velocity: list[float]
    """Per action component, in m/s or rad/s (REP-103)."""
    max_accel: list[float]
    """Per action component, in m/s^2 or rad/s^2."""
    input_timeout_s: float = 0.5
    """An input older than this stops the robot (diff_drive_controller's cmd_vel_timeout)."""
    chunk_timeout_s: float = 1.0
    """If the newest action chunk's observation is older than this, the model is considered stalled."""

    def __post_init__(self) -> None:
        if len(self.max_velocity) != len(self.max_accel):
            raise ValueError(f"max_velocity has {len(self.max_velocity)} values, max_accel {len(self.max_accel)}")
        for name in ("max_velocity", "max_accel"):
            for v in getattr(self, name):
                if not (math.isfinite(v) and v > 0):
                    raise ValueError(f"{name} values must be finite and > 0, got {getattr(self, name)}")
        for name in ("input_timeout_s", "chunk_timeout_s"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be finite and > 0, got {v}")


@dataclass
class SafetyDecision:
    command: np.ndarray
    """(A,) the command to publish."""
    cause: str | None
    """Why it was zeroed or shaped (one of ``CAUSES``), or None for a clean pass-through."""


@dataclass
class SafetyFilter:
    limits: SafetyLimits
    counts: Counter[str] = field(default_factory=Counter)
    _last: np.ndarray | None = None
    _last_t: float | None = None

    @property
    def dim(self) -> int:
        return len(self.limits.max_velocity)

    def reset(self) -> None:
        self._last, self._last_t = None, None

    def follow(self, command: np.ndarray, now: float) -> None:
        """The base runs ``command`` now without this filter (an operator took over): the acceleration limit of the
        next command starts from it, so the policy's first command after the operator lets go is no jump."""
        self._last, self._last_t = np.clip(np.asarray(command, np.float64), -self._vmax(), self._vmax()), now

    def _vmax(self) -> np.ndarray:
        return np.asarray(self.limits.max_velocity)

    def _zero(self, now: float, cause: str) -> SafetyDecision:
        self.counts[cause] += 1
        zero = np.zeros(self.dim)
        self._last, self._last_t = zero, now
        return SafetyDecision(zero, cause)

    def apply(
        self,
        action: np.ndarray | None,
        *,
        now: float,
        active: bool,
        input_ages: dict[str, float | None],
        hold: str | None = None,
    ) -> SafetyDecision:
        """``action``: (A,) due now, or None; ``input_ages``: seconds since each required input (None: never);
        ``hold``: one of ``HOLD_CAUSES`` when the caller knows the robot must stop."""
        if not active:
            return self._zero(now, "inactive")
        if hold is not None:
            if hold not in HOLD_CAUSES:
                raise ValueError(f"hold must be one of {HOLD_CAUSES}, got {hold!r}")
            return self._zero(now, hold)
        if any(age is None or age > self.limits.input_timeout_s for age in input_ages.values()):
            return self._zero(now, "stale_input")
        if action is None:
            return self._zero(now, "no_fresh_chunk")
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (self.dim,):
            raise ValueError(f"action must have shape ({self.dim},), got {action.shape}")
        if not np.all(np.isfinite(action)):
            return self._zero(now, "nonfinite_output")
        vmax = np.asarray(self.limits.max_velocity)
        cmd = np.clip(action, -vmax, vmax)
        cause = "velocity_clamped" if np.any(cmd != action) else None
        if self._last is not None and self._last_t is not None:
            dt = max(now - self._last_t, 0.0)
            step = np.asarray(self.limits.max_accel) * dt
            limited = np.clip(cmd, self._last - step, self._last + step)
            if np.any(limited != cmd):
                cause = "accel_limited"
            cmd = limited
        if cause:
            self.counts[cause] += 1
        self._last, self._last_t = cmd, now
        return SafetyDecision(cmd, cause)
