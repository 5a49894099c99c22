"""The training recipe must learn both commanded fields on a few episodes (issue 18): a change that breaks learning
(the lateral plateau never left, a collapse to the mean, a data or loss bug) fails here and not first on a robot.

The model is the user's data shape (``single_camera.json``: one camera, no joint state) trained with the recipe's
settings (1500 steps of 32 windows, lr 3e-4 after 300 warm-up steps, cosine decay) on 40 fresh episodes, a fifth of
them held out. Shorter runs are not a test of the recipe: every run sits on the lateral plateau
for its first 600-1000 steps, and batches of 16 over 1200 steps left one seed in three on it
(``bench/results/training.md``, "The CI learning test").

The lateral command (``linear.y``) is the field the instruction decides; it is learned only once the model combines
the instruction with the image, so it is the one a broken recipe loses first. The bounds are ratios of the model's
validation MAE to the mean predictor's, measured over seeds 0-2 with
``python -m bench.learning models/configs/single_camera.json --data DATA --seeds 0,1,2 --steps 1500 --eval-every 500
--batch-size 32 --val-fraction 0.2 --action-fields linear.x,linear.y,angular.z`` on
``robovlm collect-sim DATA --episodes-per-scenario 5``."""

import json

import pytest

from robovlm.sim.collect import collect
from robovlm.training.trainer import TrainSettings, train
from tests import ROOT

pytestmark = pytest.mark.slow

# Measured at step 1500 over seeds 0 / 1 / 2: linear.x 0.38 / 0.39 / 0.44, linear.y 0.23 / 0.25 / 0.36
# (bench/results/training.md). The bound leaves the worst seed room (x 1.35x, y 1.7x) and stays far from failure:
# the mean predictor is 1.0 and a run still on the lateral plateau measures 0.95-1.01 for linear.y.
MAX_RATIO = {"linear.x": 0.6, "linear.y": 0.6}
SEED = 0


def test_the_recipe_learns_both_fields_on_forty_episodes(tmp_path):
    data = tmp_path / "data"
    collected = collect(data, episodes_per_scenario=5)
    assert collected.episodes == 40 and collected.failures == 0
    settings = TrainSettings(  # the recipe as measured, spelled out: a change of the defaults does not move the test
        steps=1500,
        batch_size=32,
        lr=3e-4,
        warmup_steps=300,
        eval_every=500,
        val_fraction=0.2,
        seed=SEED,
        action_fields=("linear.x", "linear.y", "angular.z"),
    )
    train(ROOT / "models" / "configs" / "single_camera.json", data, tmp_path / "ckpt", settings)
    metrics = json.loads((tmp_path / "ckpt" / "metrics.json").read_text())
    # angular.z is zero in every episode (its mean predictor's MAE is 0): it is predicted, not scored.
    ratios = {f: metrics["final_val_mae"][f] / metrics["baseline_val_mae"][f] for f in MAX_RATIO}
    assert metrics["not_learned"] == [], ratios
    for field, bound in MAX_RATIO.items():
        assert ratios[field] < bound, (field, ratios, metrics["val_history"])
