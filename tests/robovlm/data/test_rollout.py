"""Rollout recordings without a node: the schema in the docs equals the code's, a recording written with
``RolloutBag`` reads back with its interventions and outcome, and ``--rollouts`` keeps the frames it says it keeps
(a shadow recording is all demonstration; an intervention still open at the end runs to the end)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from robovlm.data.bag import read_recording
from robovlm.data.dataset import load_episodes
from robovlm.data.rollout import TOPICS, TYPES, RolloutBag, parse_outcome, rollout_segments, runs
from tests import ROOT

T0 = 1_000_000_000_000


def test_the_documented_schema_is_the_one_in_code():
    text = (ROOT / "docs" / "flywheel.md").read_text()
    rows = dict(re.findall(r"^\| `(/[^`]+)` \| `([^`]+)` \|", text, flags=re.M))
    assert rows == {TOPICS[k]: TYPES[k] for k in TOPICS}


def test_outcomes_parse_with_a_note_and_a_wrong_one_names_the_labels():
    assert parse_outcome("Success") == ("success", "")
    assert parse_outcome("failure: bumped the box") == ("failure", "bumped the box")
    with pytest.raises(ValueError, match="success, failure, aborted"):
        parse_outcome("done")


def write(path, *, mode: str, marks: list[tuple[int, bool]], outcome: str | None, frames: int = 30):
    """``frames`` head frames at 10 Hz, the policy's command 0.2, the operator's -0.1 inside ``marks``."""
    bag = RolloutBag(path, fields=["linear.x", "linear.y"], info={"mode": mode, "node": "robovlm", "model": "m"})
    bag.text("instruction", "go around the box on the left to the cup", T0)
    spans = [(a, b) for (a, on), (b, _) in zip(marks[::2], marks[1::2] + [(frames, False)]) if on]
    rng = np.random.default_rng(0)
    for i in range(frames):
        ns = T0 + i * 100_000_000
        for k, on in marks:
            if k == i:
                bag.intervention(on, ns)
        operator = any(a <= i < b for a, b in spans) or mode == "shadow"
        bag.command([-0.1 if operator else 0.2, 0.0], "operator" if operator else "policy", ns)
        bag.joints(["arm_pan", "arm_lift"], [0.0, 0.0], ns, ns)
        bag.image("head", rng.integers(0, 255, (8, 8, 3), dtype=np.uint8), ns + 1, ns)
    if outcome:
        bag.text("outcome", outcome, T0 + frames * 100_000_000)
    bag.close()


def test_a_recording_reads_back_with_its_interventions_outcome_and_the_segments_each_mode_keeps(tmp_path):
    write(tmp_path / "r0", mode="drive", marks=[(5, True), (12, False), (20, True)], outcome="success: close call")
    ep, timeline = read_recording(tmp_path / "r0", use_hand=False)
    rollout = timeline.rollout
    assert rollout is not None and rollout.mode == "drive" and rollout.outcome == ("success", "close call")
    assert [on for _, on in rollout.interventions] == [True, False, True]
    kept = rollout_segments(ep, rollout, "interventions")
    assert [len(s) for s in kept] == [7, 10]  # [5, 12) and [20, end): the last one still open at the end
    assert all(np.allclose(s.actions[:, 0], -0.1) for s in kept), "intervention frames teach the operator's command"
    assert [s.name for s in kept] == ["r0#0", "r0#1"]
    # a success: the policy's frames too, but the second before each intervention (the drift it corrected)
    assert [len(s) for s in rollout_segments(ep, rollout, "successes")] == [7, 10]
    write(tmp_path / "r1", mode="drive", marks=[(25, True)], outcome="success", frames=40)
    ep1, timeline1 = read_recording(tmp_path / "r1", use_hand=False)
    assert timeline1.rollout is not None
    assert [(s.frame_times_ns[0] - T0) // 10**8 for s in rollout_segments(ep1, timeline1.rollout, "successes")] == [
        0,
        25,
    ]
    assert [len(s) for s in rollout_segments(ep1, timeline1.rollout, "successes")] == [15, 15]
    assert runs(np.array([1, 1, 0, 1], bool)) == [(0, 2), (3, 4)]


def test_failures_teach_only_their_interventions_unless_all_and_shadow_is_all_demonstration(tmp_path):
    write(tmp_path / "fail", mode="drive", marks=[(10, True), (18, False)], outcome="failure")
    write(tmp_path / "none", mode="drive", marks=[], outcome=None)
    write(tmp_path / "shadow", mode="shadow", marks=[], outcome=None)
    lengths = {
        mode: sorted(len(e) for e in load_episodes(tmp_path, rollouts=mode, use_hand=False, image_size=8))
        for mode in ("interventions", "successes", "all")
    }
    assert lengths["interventions"] == [8, 30]  # the failure's intervention, the shadow recording whole
    assert lengths["successes"] == [8, 30]  # no success marked: the same
    assert lengths["all"] == [30, 30, 30]
