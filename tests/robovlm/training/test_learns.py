"""The training recipe must learn both commanded fields on a few episodes (issue 18): a change that breaks learning
(the lateral plateau never left, a collapse to the mean, a data or loss bug) fails here and not first on a robot.

The model is the user's data shape (``single_camera.json``: one camera, no joint state) trained with the recipe's
settings (batches of 32 windows, lr 3e-4 after 300 warm-up steps, cosine decay) on 40 fresh episodes, a fifth of them
held out. The lateral command (``linear.y``) is the field the instruction decides; it is learned only once the model
combines the instruction with the image, so it is the one a broken recipe loses first.

What is smaller than the recipe, and why the test's point survives it (issue 34: the suite in 15 minutes): the
instructions are short (``SHORT``: the side and the layout in 9-20 characters where ``models/instructions.json`` has
49-62), so the byte-tokenized prefix the language model runs over each frame is a third as long and a step costs
about 0.27 s instead of 0.41 s on one thread; and the run is 1000 steps instead of 1500, which the short instructions
allow: they leave the lateral plateau by step 500-1000 where the recipe's sentences leave it at 600-1000 of 1500
(``bench/results/training.md``, "The CI learning test"). The sentences still name the side and the boxes, as the
recipe's do: with the side alone ("go left") the forward field, which the layout decides, ends at 0.50-0.55 of the
mean predictor instead of about 0.4.
"""

import json

import pytest

from robovlm.data.instructions import InstructionSources
from robovlm.sim.collect import collect
from robovlm.sim.world import SCENARIOS
from robovlm.training.trainer import TrainSettings, train
from tests import ROOT

# no_cover: its 1000 steps run lines the short training tests already cover, and coverage's tracer made training
# about 35 % slower (tests/robovlm/training/test_train.py's same-seed test: 8.7 s without, 11.8 s with)
# timeout: 345 s on an idle machine, 650 s beside two trainings
pytestmark = [pytest.mark.slow, pytest.mark.no_cover, pytest.mark.timeout(1200)]


def short_instruction(scenario: str) -> str:
    """'left, two wide boxes' for 2box_hori_left: the side first, then what the recipe's sentence says of the boxes."""
    count, orientation, side = scenario.split("_")
    two = count.startswith("2")
    wide = "wide " if orientation == "hori" else ""
    return f"{side}, {'two' if two else 'one'} {wide}box{'es' if two else ''}"


SHORT = {scenario: short_instruction(scenario) for scenario in SCENARIOS}
# Measured at step 1000 with these instructions over seeds 0 / 1 / 2 / 3 (bench/results/training.md, "The CI learning
# test"): linear.x 0.39 / 0.39 / 0.42 / 0.39, linear.y 0.25 / 0.25 / 0.35 / 0.23. The bound leaves the worst seed room
# (x 1.4x, y 1.7x) and stays far from failure: the mean predictor is 1.0 and a run still on the lateral plateau
# measures 0.95-1.02 for linear.y.
MAX_RATIO = {"linear.x": 0.6, "linear.y": 0.6}
SEED = 0


def test_the_recipe_learns_both_fields_on_forty_episodes(tmp_path):
    data = tmp_path / "data"
    collected = collect(data, episodes_per_scenario=5)
    assert collected.episodes == 40 and collected.failures == 0
    settings = TrainSettings(  # the recipe as measured, spelled out: a change of the defaults does not move the test
        steps=1000,
        batch_size=32,
        lr=3e-4,
        warmup_steps=300,
        eval_every=500,
        val_fraction=0.2,
        seed=SEED,
        action_fields=("linear.x", "linear.y", "angular.z"),
    )
    train(
        ROOT / "models" / "configs" / "single_camera.json",
        data,
        tmp_path / "ckpt",
        settings,
        instructions=InstructionSources(mapping=SHORT),
    )
    metrics = json.loads((tmp_path / "ckpt" / "metrics.json").read_text())
    # angular.z is zero in every episode (its mean predictor's MAE is 0): it is predicted, not scored.
    ratios = {f: metrics["final_val_mae"][f] / metrics["baseline_val_mae"][f] for f in MAX_RATIO}
    assert metrics["not_learned"] == [], ratios
    for field, bound in MAX_RATIO.items():
        assert ratios[field] < bound, (field, ratios, metrics["val_history"])
