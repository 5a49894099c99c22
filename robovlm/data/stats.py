"""Normalization statistics saved beside the weights as ``stats.json``.

The model sees the joint state standardized (``(x - mean) / std``) and predicts actions in [-1, 1]; the runtime
maps them back to physical units with ``action_low``/``action_high``. ``action_dt`` is the time between actions
of a chunk; ``joint_names`` says which joints, in order, make the state vector.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np


class StatsError(ValueError):
    """``stats.json`` is missing a key or holds inconsistent values."""


@dataclass
class NormStats:
    state_mean: list[float]
    """Per-joint mean of the state vector."""
    state_std: list[float]
    """Per-joint standard deviation (positive)."""
    action_low: list[float]
    """Physical action mapped to -1, per action field."""
    action_high: list[float]
    """Physical action mapped to +1, per action field (greater than ``action_low``)."""
    action_dt: float = 0.1
    """Seconds between consecutive actions of a chunk."""
    joint_names: list[str] = field(default_factory=list)
    """Joint names in state order (``state_joints`` of the node)."""
    action_fields: list[str] = field(default_factory=lambda: ["linear.x", "linear.y"])
    """Twist fields the action components map to, in order."""

    def __post_init__(self) -> None:
        n, a = len(self.state_mean), len(self.action_low)
        if len(self.state_std) != n:
            raise StatsError(f"state_std has {len(self.state_std)} values, state_mean has {n}")
        if any(not (math.isfinite(s) and s > 0) for s in self.state_std):
            raise StatsError(f"state_std must be finite and positive, got {self.state_std}")
        if len(self.action_high) != a or len(self.action_fields) != a:
            raise StatsError(
                f"action_low ({a}), action_high ({len(self.action_high)}) and action_fields "
                f"({len(self.action_fields)}) must have the same length"
            )
        if any(not (lo < hi) for lo, hi in zip(self.action_low, self.action_high)):
            raise StatsError(f"action_low must be below action_high, got {self.action_low} / {self.action_high}")
        if self.joint_names and len(self.joint_names) != n:
            raise StatsError(f"joint_names has {len(self.joint_names)} names for a state of {n} values")
        if not (math.isfinite(self.action_dt) and self.action_dt > 0):
            raise StatsError(f"action_dt must be positive, got {self.action_dt}")

    @classmethod
    def identity(cls, *, state_dim: int, action_dim: int, action_limit: float = 1.0) -> NormStats:
        """Untrained defaults: state unscaled, actions in [-action_limit, action_limit]."""
        fields_ = (
            ["linear.x", "linear.y", "angular.z"][:action_dim]
            if action_dim <= 3
            else [f"action_{i}" for i in range(action_dim)]
        )
        return cls(
            state_mean=[0.0] * state_dim,
            state_std=[1.0] * state_dim,
            action_low=[-action_limit] * action_dim,
            action_high=[action_limit] * action_dim,
            joint_names=[f"joint_{i}" for i in range(state_dim)],
            action_fields=fields_,
        )

    def normalize_state(self, state: np.ndarray) -> np.ndarray:
        return (np.asarray(state, dtype=np.float32) - np.asarray(self.state_mean, np.float32)) / np.asarray(
            self.state_std, np.float32
        )

    def unnormalize_action(self, action: np.ndarray) -> np.ndarray:
        lo, hi = np.asarray(self.action_low, np.float32), np.asarray(self.action_high, np.float32)
        return lo + (np.asarray(action, dtype=np.float32) + 1.0) * 0.5 * (hi - lo)

    def normalize_action(self, action: np.ndarray) -> np.ndarray:
        lo, hi = np.asarray(self.action_low, np.float32), np.asarray(self.action_high, np.float32)
        return np.clip(2.0 * (np.asarray(action, dtype=np.float32) - lo) / (hi - lo) - 1.0, -1.0, 1.0)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> NormStats:
        path = Path(path)
        if not path.is_file():
            raise StatsError(f"missing {path}")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise StatsError(f"{path}: not valid JSON ({exc})") from exc
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        missing = sorted(n for n in ("state_mean", "state_std", "action_low", "action_high") if n not in data)
        if unknown or missing:
            raise StatsError(f"{path}: missing keys {missing}, unexpected keys {unknown}")
        try:
            return cls(**data)
        except (TypeError, StatsError) as exc:
            raise StatsError(f"{path}: {exc}") from exc
