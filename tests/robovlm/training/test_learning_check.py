"""The mean predictor as the yardstick of a training run: its MAE, the not-learned verdict, and the CLI's exit code."""

import json

import numpy as np
import pytest
import torch

from robovlm.cli import main
from robovlm.data.stats import NormStats
from robovlm.sim.collect import collect
from robovlm.training.learning_check import NO_LEARNING_RATIO, baseline_mae, describe, not_learned


def _stats() -> NormStats:
    return NormStats(
        state_mean=[0.0, 0.0],
        state_std=[1.0, 1.0],
        action_low=[-1.0, 0.0],
        action_high=[1.0, 2.0],
        action_fields=["linear.y", "linear.x"],
    )


def test_the_mean_predictors_mae_counts_only_masked_actions_in_physical_units():
    stats = _stats()
    # physical targets: linear.y in {-1, +1}, linear.x in {0.5, 1.5}; normalized: (v - centre) / half-range
    physical = torch.tensor([[[[-1.0, 0.5], [1.0, 1.5], [9.0, 9.0]]]])  # (B=1, T=1, n=3, A=2); the last is masked
    centre, half = torch.tensor([0.0, 1.0]), torch.tensor([1.0, 1.0])
    batch = {"actions": (physical - centre) / half, "action_mask": torch.tensor([[[True, True, False]]])}
    mae = baseline_mae([batch], stats, np.array([0.0, 1.0]))
    assert mae == pytest.approx({"linear.y": 1.0, "linear.x": 0.5})


def test_not_learned_names_the_fields_near_the_mean_predictor_and_skips_fields_without_motion():
    baseline = {"linear.x": 0.05, "linear.y": 0.12, "angular.z": 0.0}
    assert not_learned({"linear.x": 0.014, "linear.y": 0.017, "angular.z": 0.0}, baseline) == []
    assert not_learned({"linear.x": 0.014, "linear.y": 0.114, "angular.z": 0.0}, baseline) == ["linear.y"]
    assert not_learned({"linear.x": NO_LEARNING_RATIO * 0.05, "linear.y": 0.0, "angular.z": 1.0}, baseline) == [
        "linear.x"
    ]
    assert "mean predictor 0.1200, 14%" in describe({"linear.y": 0.017}, baseline)


@pytest.mark.slow
def test_a_run_that_learns_nothing_exits_3_and_says_which_fields(tmp_path, capsys):
    data = tmp_path / "data"
    collect(data, episodes_per_scenario=2, image_size=56, noise=0.05)
    args = [
        "train",
        "models/configs/demo.json",
        "--data",
        str(data),
        "--out",
        str(tmp_path / "ck"),
        "--steps",
        "4",
        "--batch-size",
        "8",
        "--eval-every",
        "2",
        "--val-fraction",
        "0.5",
        "--lr",
        "1e-9",  # the model stays at its initialization, which predicts the middle of each field's range
    ]
    assert main(args) == 3
    err = capsys.readouterr().err
    assert "did not learn" in err and "linear.x" in err, err
    metrics = json.loads((tmp_path / "ck" / "metrics.json").read_text())
    assert "linear.x" in metrics["not_learned"] and metrics["baseline_val_mae"]["linear.x"] > 0
    assert all(h["not_learned"] for h in metrics["val_history"])
    assert main([*args, "--out", str(tmp_path / "ck2"), "--allow-no-learning"]) == 0
