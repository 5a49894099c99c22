"""ShadowComparison: the policy's commands against the operator's, live (``operator_cmd_topic``).

The first session with a robot runs the node in shadow mode (``output_mode: shadow``: the commands go to
``~/cmd_vel_shadow``, ``cmd_vel`` is never created) beside an operator who drives by teleop. At every control tick
the command the policy would send is paired with the operator's newest command, if it is newer than
``input_timeout_s``, and the rolling ``robovlm.runtime.agreement`` figures over ``agreement_window_s`` (MAE, sign
agreement, correlation per action field) go to diagnostics and ``~/agreement``: the same figures ``robovlm replay``
prints for a recording.

Owns: the operator's newest command and the rolling window. Talks to: nothing; the control loop calls ``observe``,
the operator subscription ``on_operator``, diagnostics ``summary``. No ROS import.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np

from robovlm.runtime.agreement import FieldAgreement, RollingAgreement

from .takeover import CAUSE as TAKEOVER_CAUSE


class ShadowComparison:
    def __init__(
        self, *, topic: str, fields: list[str], window_s: float, max_age_s: float, clock: Callable[[], float]
    ) -> None:
        self.topic = topic
        self.fields = list(fields)
        self.max_age_s = max_age_s
        self._clock = clock  # node clock, seconds
        self._lock = threading.Lock()
        self._operator: tuple[float, np.ndarray] | None = None  # (arrival, (F,) command)
        self._window = RollingAgreement(self.fields, window_s)
        self._pairs = 0

    def on_operator(self, command: np.ndarray) -> None:
        with self._lock:
            self._operator = (self._clock(), np.asarray(command, np.float64))

    def operator_age(self, now: float) -> float | None:
        with self._lock:
            return None if self._operator is None else now - self._operator[0]

    def observe(self, command: np.ndarray, cause: str | None, now: float) -> None:
        """A control tick's command (held ones too: a policy that holds while the operator drives disagrees); not
        the ticks the operator commanded (a takeover)."""
        if cause == TAKEOVER_CAUSE:
            return
        with self._lock:
            operator = self._operator
        if operator is None or now - operator[0] > self.max_age_s:
            return
        self._window.add(now, command, operator[1])
        self._pairs += 1

    def summary(self, now: float) -> dict[str, FieldAgreement]:
        return self._window.summary(now)

    @property
    def window_s(self) -> float:
        return self._window.window_s

    @property
    def pairs(self) -> int:
        """Commands compared since configure."""
        return self._pairs
