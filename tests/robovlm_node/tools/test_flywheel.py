"""A short flywheel on a tiny setup (``make flywheel``'s code path): a policy from one demonstration per scenario
drives two rollouts through the node over DDS, the simulated operator takes over, the node records, and the next
policy trains on the demonstrations plus the recorded interventions; and the simulated operator alone, in the sim,
recovers from wherever a bad policy drove."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from robovlm.data.dataset import is_bag, load_episodes
from robovlm.sim.env import CupWorldEnv
from robovlm.sim.operator import SimulatedOperator
from robovlm.sim.perturb import level
from robovlm.sim.world import SCENARIOS
from robovlm_node.tools.flywheel import ROLLOUT_SEED, _subset, main


def test_the_simulated_operator_recovers_from_where_a_bad_policy_drove_within_the_nodes_limits():
    env = CupWorldEnv(image_size=16, control_dt=0.1)
    op = SimulatedOperator()
    rng = np.random.default_rng(0)
    for k, scenario in enumerate(SCENARIOS):
        env.reset(scenario, 7000 + k)
        op.reset(env.layout)
        done, t, sent = False, 0.0, []
        while not done:
            policy = np.array([0.3, 0.0]) if k % 2 == 0 else rng.uniform(-0.3, 0.3, 2)  # into the box, or random
            cmd = op.command(env.base_pose(), policy, t)
            if cmd is not None:
                sent.append((round(t, 1), cmd))
            _, done, info = env.step(policy if cmd is None else cmd, render=False)
            t += 0.1
        assert info.success, (scenario, info)
        assert op.interventions >= 1 and op.frames == len(sent)
        cmds = np.array([c for _, c in sent])
        assert np.abs(cmds).max() <= 0.3 + 1e-9  # max_velocity per field
        # max_accel 0.8 m/s^2 over a 0.1 s frame, within one intervention (consecutive frames)
        steps = [np.abs(b - a).max() for (ta, a), (tb, b) in zip(sent, sent[1:]) if round(tb - ta, 1) == 0.1]
        assert steps and max(steps) <= 0.08 + 1e-9
    env.close()


@pytest.mark.dds
@pytest.mark.slow
def test_one_flywheel_round_records_interventions_through_the_node_and_trains_on_them(tmp_path):
    out = tmp_path / "fw"
    results = tmp_path / "flywheel.md"
    argv = [
        "--out",
        str(out),
        "--results",
        str(results),
        "--demos",
        "1",
        "--rounds",
        "1",
        "--rollouts",
        "2",
        "--real-time-factor",
        "2.5",
        "--perturb",
        "mild",
    ]
    (out / "round1" / "rollouts.partial").mkdir(parents=True)  # a run stopped while it recorded round 1
    (out / "round1" / "rollouts.partial" / "half_an_episode").mkdir()
    assert main([*argv, "--steps", "4", "--eval-episodes", "1", "--baseline", ""]) == 0
    assert not (out / "round1" / "rollouts.partial").exists()
    rows = json.loads(results.with_suffix(".json").read_text())
    assert [r["run"] for r in rows] == ["flywheel round 0", "flywheel round 1"]
    rollouts = json.loads((out / "round1" / "rollouts.json").read_text())
    assert len(rollouts) == 2 and all(r["interventions"] >= 1 for r in rollouts), rollouts
    bags = [p for p in (out / "round1" / "rollouts").iterdir() if is_bag(p)]
    assert len(bags) == 2  # one recording per activation
    taught = load_episodes([out / "round1" / "rollouts"], rollouts="interventions", use_hand=False)
    assert rows[1]["operator_frames"] == sum(len(ep) for ep in taught) > 0
    assert (out / "round1" / "checkpoint" / "model.safetensors").is_file()
    # round 1 fine-tuned round 0's policy (the default): its normalization is round 0's, not the new data's
    before, after = ((out / r / "checkpoint" / "stats.json").read_text() for r in ("round0", "round1"))
    assert after == before
    assert "| flywheel round 1 |" in results.read_text() and "`--perturb mild`" in results.read_text()
    # the rollouts ran in the perturbed rooms eval-sim draws for the same layouts, not in the plain one
    seen = sorted(load_episodes([out / "round1" / "rollouts"], rollouts="all", use_hand=False), key=lambda e: e.name)
    first = seen[0].images[0].astype(np.float32)
    difference = {}
    for name in ("mild", "none"):
        env = CupWorldEnv(image_size=first.shape[0], perturb=level(name))
        difference[name] = float(np.abs(env.reset(SCENARIOS[0], ROLLOUT_SEED + 1000).head - first).mean())
        env.close()
    assert difference["mild"] < 0.5 * difference["none"], difference
    # a rerun resumes: nothing is trained again, and each row keeps the minutes it took when it was measured; a
    # baseline with more demonstrations than the first run collected gets them collected, never fewer linked
    assert main([*argv, "--steps", "4", "--eval-episodes", "1", "--baseline", "2", "--baseline-steps", "4"]) == 0
    again = json.loads(results.with_suffix(".json").read_text())
    assert [r["minutes"] for r in again[:2]] == [r["minutes"] for r in rows] and rows[1]["minutes"] > 0
    assert again[2]["run"] == "baseline 2 demos / scenario" and again[2]["demo_frames"] > rows[0]["demo_frames"]
    assert {p.stem.rsplit("_", 1)[1] for p in (out / "demos").glob("sim_*.h5")} == {"00000", "00001"}
    with pytest.raises(SystemExit, match="made with --perturb mild"):  # one level per work directory
        main([*argv[:-1], "none", "--steps", "4", "--eval-episodes", "1", "--baseline", ""])
    with pytest.raises(SystemExit, match="made with --seed 0"):  # and one training seed
        main([*argv, "--seed", "1", "--steps", "4", "--eval-episodes", "1", "--baseline", ""])

    # `kill` of a run while the node drives round 2's rollouts (rounds 0 and 1 resume from the work directory):
    # the run ends and takes the node process with it
    more = [*argv[:7], "2", *argv[8:], "--steps", "4", "--eval-episodes", "1", "--baseline", ""]
    tool = subprocess.Popen([sys.executable, "-m", "robovlm_node.tools.flywheel", *more])
    marker = f"{out / 'round2' / 'rollouts.partial'}"
    try:
        assert _wait(lambda: _node_processes(marker), 120), "round 2's node never started"
        tool.send_signal(signal.SIGTERM)
        assert tool.wait(timeout=60) == 128 + signal.SIGTERM
        assert _wait(lambda: not _node_processes(marker), 30), "the node outlived the run"
    finally:  # a failed check leaves no process behind either
        tool.kill()
        for pid in _node_processes(marker):
            with contextlib.suppress(ProcessLookupError):  # ended meanwhile
                os.kill(pid, signal.SIGKILL)


def _node_processes(marker: str) -> list[int]:
    """Node processes whose command line names ``marker``."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # ended while we looked
            continue
        if "robovlm_node.process" in text and marker in text:
            found.append(int(cmdline.parent.name))
    return found


def _wait(condition, timeout_s: float) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.2)
    return False


def test_a_work_directory_can_be_moved(tmp_path):
    """Its demonstration subsets link into its own ``demos`` relatively; an older run's absolute links, dangling
    after a move, are made again."""
    demos = tmp_path / "a" / "demos"
    demos.mkdir(parents=True)
    for seed in range(3):
        (demos / f"sim_1box_hori_left_{seed:05d}.h5").write_bytes(b"episode %d" % seed)
    subset = _subset(demos, tmp_path / "a" / "demos_2", 2)
    assert sorted(p.read_bytes() for p in subset.iterdir()) == [b"episode 0", b"episode 1"]
    (subset / "sim_1box_hori_left_00000.h5").unlink()  # as an older run left it: an absolute link
    (subset / "sim_1box_hori_left_00000.h5").symlink_to(demos / "sim_1box_hori_left_00000.h5")
    (tmp_path / "a").rename(tmp_path / "b")
    moved = _subset(tmp_path / "b" / "demos", tmp_path / "b" / "demos_2", 2)
    assert sorted(p.read_bytes() for p in moved.iterdir()) == [b"episode 0", b"episode 1"]
