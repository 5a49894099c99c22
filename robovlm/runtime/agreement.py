"""How far the policy's commands agree with an operator's: per action field, the mean absolute error, the share of
commands with the same sign, and the correlation. One definition for ``robovlm replay`` (the node against a bag's
recorded teleop) and the node's shadow mode (the node against the live teleop), so a figure read off a replay means
the same on the robot.

Sign agreement uses a dead band (``SIGN_DEADBAND``): a policy creeping at 0.005 m/s while the operator stands still
agrees with the operator; a policy driving forward while the operator reverses does not. The correlation is the
Pearson correlation; undefined (NaN) when either side is constant over the samples.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass

import numpy as np

SIGN_DEADBAND = 0.02
"""Below this magnitude (m/s or rad/s) a command counts as zero for sign agreement."""


@dataclass(frozen=True)
class FieldAgreement:
    mae: float
    """Mean absolute difference, in the field's units."""
    sign_agreement: float
    """Share of samples whose signs (with the dead band) are equal, 0-1."""
    correlation: float
    """Pearson correlation, NaN when either side is constant."""
    samples: int

    def format(self) -> str:
        corr = "n/a" if math.isnan(self.correlation) else f"{self.correlation:.2f}"
        return f"MAE {self.mae:.4f}, same sign {self.sign_agreement:.0%}, correlation {corr}"


def _sign(x: np.ndarray) -> np.ndarray:
    return np.where(np.abs(x) < SIGN_DEADBAND, 0, np.sign(x))


def agreement(policy: np.ndarray, operator: np.ndarray, fields: list[str]) -> dict[str, FieldAgreement]:
    """``policy`` and ``operator``: (N, F) commands paired in time, F = len(fields); {} when N is 0."""
    policy = np.asarray(policy, np.float64).reshape(-1, len(fields))
    operator = np.asarray(operator, np.float64).reshape(-1, len(fields))
    if policy.shape != operator.shape:
        raise ValueError(f"policy {policy.shape} and operator {operator.shape} commands must pair up")
    if len(policy) == 0:
        return {}
    out = {}
    for k, name in enumerate(fields):
        p, o = policy[:, k], operator[:, k]
        corr = float("nan")
        if len(p) > 1 and p.std() > 0 and o.std() > 0:
            corr = float(np.corrcoef(p, o)[0, 1])
        out[name] = FieldAgreement(
            mae=float(np.abs(p - o).mean()),
            sign_agreement=float((_sign(p) == _sign(o)).mean()),
            correlation=corr,
            samples=len(p),
        )
    return out


class RollingAgreement:
    """``agreement`` over the pairs of the last ``window_s`` seconds; thread-safe (the control loop adds, the
    diagnostics thread reads)."""

    def __init__(self, fields: list[str], window_s: float) -> None:
        if not (math.isfinite(window_s) and window_s > 0):
            raise ValueError(f"window_s must be finite and > 0, got {window_s}")
        self.fields = list(fields)
        self.window_s = window_s
        self._lock = threading.Lock()
        self._pairs: deque[tuple[float, np.ndarray, np.ndarray]] = deque()  # (time, policy (F,), operator (F,))

    def add(self, t: float, policy: np.ndarray, operator: np.ndarray) -> None:
        with self._lock:
            self._pairs.append((t, np.asarray(policy, np.float64), np.asarray(operator, np.float64)))
            while self._pairs and self._pairs[0][0] < t - self.window_s:
                self._pairs.popleft()

    def summary(self, now: float) -> dict[str, FieldAgreement]:
        with self._lock:
            pairs = [(p, o) for t, p, o in self._pairs if t >= now - self.window_s]
        if not pairs:
            return {}
        return agreement(np.stack([p for p, _ in pairs]), np.stack([o for _, o in pairs]), self.fields)
