"""Did the run learn? The validation MAE of the mean predictor beside the model's, per action field.

A behaviour-cloning run that does not learn still ends with a small loss: predicting the data's mean action gives a
loss near 0.06 on the demo data, and a validation MAE that looks plausible in m/s. The honest yardstick is that mean
predictor: the training set's mean action, scored on the same validation windows as the model (same masks, same
physical units). A field whose MAE stays above ``NO_LEARNING_RATIO`` of the mean predictor's has not been learned;
the lateral command, which only the instruction decides, is the field that shows it first.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch

from ..data.dataset import ACTION_COLUMNS
from ..data.hdf5 import Episode
from ..data.stats import NormStats

NO_LEARNING_RATIO = 0.9
"""A field whose validation MAE is at least this fraction of the mean predictor's has not been learned."""
MIN_BASELINE_MAE = 1e-4
"""Fields the data never moves (``angular.z`` of a robot that never turns) have nothing to learn and are skipped."""


def mean_action(episodes: Iterable[Episode], fields: Sequence[str]) -> np.ndarray:
    """The training set's mean action per field, physical units, over every frame."""
    cols = [ACTION_COLUMNS[f] for f in fields]
    total, count = np.zeros(len(cols)), 0
    for ep in episodes:
        acts = np.asarray(ep.actions, dtype=np.float64)[:, cols]
        total += acts.sum(0)
        count += len(acts)
    return total / max(count, 1)


class MaskedMAE:
    """Mean absolute error per field, in physical units, over every masked action of the batches added: the one
    weighting the model's validation MAE and the mean predictor's share."""

    def __init__(self, stats: NormStats) -> None:
        self.fields = list(stats.action_fields)
        self.scale = (np.asarray(stats.action_high) - np.asarray(stats.action_low)) / 2.0  # normalized -> physical
        self.err, self.count = np.zeros(len(self.scale)), 0

    def add(self, pred: torch.Tensor, actions: torch.Tensor, action_mask: torch.Tensor) -> None:
        """pred, actions (B, T, n, A) normalized (pred may broadcast); action_mask (B, T, n)."""
        mask = action_mask.float()[..., None]  # (B, T, n, 1)
        self.err += ((pred.float() - actions.float()).abs() * mask).sum((0, 1, 2)).cpu().numpy() * self.scale
        self.count += int(mask.sum().item())

    def result(self) -> dict[str, float]:
        return {f: float(e / max(self.count, 1)) for f, e in zip(self.fields, self.err)}


@torch.no_grad()
def baseline_mae(loader: Iterable[dict[str, torch.Tensor]], stats: NormStats, mean: np.ndarray) -> dict[str, float]:
    """The mean predictor's MAE per field over the validation windows, weighted as the model's."""
    low, high = np.asarray(stats.action_low), np.asarray(stats.action_high)
    mean_norm = torch.as_tensor((mean - (high + low) / 2.0) / ((high - low) / 2.0), dtype=torch.float32)
    acc = MaskedMAE(stats)
    for batch in loader:
        acc.add(mean_norm, batch["actions"], batch["action_mask"])
    return acc.result()


def not_learned(mae: dict[str, float], baseline: dict[str, float]) -> list[str]:
    """The fields whose MAE is at least ``NO_LEARNING_RATIO`` of the mean predictor's (fields with nothing to learn
    skipped)."""
    return [
        f for f, b in baseline.items() if b > MIN_BASELINE_MAE and mae.get(f, float("inf")) >= NO_LEARNING_RATIO * b
    ]


def describe(mae: dict[str, float], baseline: dict[str, float]) -> str:
    """``linear.x 0.0142 (mean predictor 0.0520, 27%)`` for each field."""
    parts = []
    for f, v in mae.items():
        b = baseline.get(f, 0.0)
        ratio = f", {v / b:.0%}" if b > MIN_BASELINE_MAE else ""
        parts.append(f"{f} {v:.4f} (mean predictor {b:.4f}{ratio})")
    return "; ".join(parts)
