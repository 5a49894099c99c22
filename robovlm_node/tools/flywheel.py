"""``make flywheel``: does the data flywheel make the policy better? DAgger in simulation, through the real node.

Round 0 trains a policy on a few expert demonstrations (``--demos`` per scenario). Each round after it: the newest
policy drives ``--rollouts`` episodes on training layouts through the node over ROS (``rollouts.py``), a simulated
operator taking over where it goes wrong, the node recording everything; then round r-1's policy is fine-tuned on
the demonstrations plus every round's recordings so far (``robovlm train CKPT --init-from CKPT --data demos --data
round1 ... --rollouts MODE``; ``--retrain``: a policy from scratch instead), and evaluated on held-out
layouts (``eval-sim``'s in-process loop). Beside it the baseline: policies trained from scratch on expert
demonstrations only, ``--baseline`` per scenario (``--baseline-steps``). Each row goes to ``--results`` (Markdown,
and JSON beside it) as soon as it is measured.

Layout seeds: demonstrations from 0, rollouts from ``ROLLOUT_SEED`` (round r: ``ROLLOUT_SEED + 1000 r``), evaluation
from ``EVAL_SEED`` (``eval-sim``'s default): disjoint. ``--perturb``: every room of the run (demonstrations, rollouts,
evaluation) randomized at that level of ``robovlm.sim.perturb``, a harder world than the plain one; the work
directory remembers it and ``--seed`` (``run.json``), so a rerun never mixes the rooms of two levels or two seeds.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shlex
import shutil
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from robovlm.configs.training import TrainSettings
from robovlm.data.dataset import load_episodes
from robovlm.data.rollout import DEFAULT_ROLLOUT_MODE, ROLLOUT_MODES
from robovlm.sim.collect import collect
from robovlm.sim.evaluate import evaluate
from robovlm.sim.perturb import LEVELS
from robovlm.training.trainer import train
from robovlm.utils.resources import find_resource

from .rollouts import run_rollouts

ROLLOUT_SEED = 300_000
EVAL_SEED = 100_000
log = logging.getLogger("flywheel")


@dataclass
class Row:
    run: str
    """flywheel round r, or baseline N demos per scenario."""
    success: int
    episodes: int
    collisions: int
    demo_frames: int
    operator_frames: int
    """Frames the operator labelled in all rounds so far (intervention segments training takes)."""
    rollouts: int = 0
    rollout_successes: int = 0
    interventions_per_episode: float = 0.0
    minutes: float = 0.0

    def markdown(self) -> str:
        ipe = f"{self.interventions_per_episode:.2f}" if self.rollouts else ""
        rolled = f"{self.rollout_successes}/{self.rollouts}" if self.rollouts else ""
        return (
            f"| {self.run} | {self.success}/{self.episodes} ({100 * self.success / self.episodes:.0f}%) | "
            f"{self.collisions} | {rolled} | {ipe} | {self.demo_frames} | {self.operator_frames} | "
            f"{self.demo_frames + self.operator_frames} | {self.minutes:.1f} |"
        )


HEADER = (
    "| run | held-out success | collisions | rollouts reaching the cup (operator's help included) | "
    "interventions / rollout | demonstration frames | operator-labelled frames (rounds so far) | "
    "labelled frames in all | minutes |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
)


def _subset(demos: Path, out: Path, per_scenario: int) -> Path:
    """The demonstrations with layout seed below ``per_scenario`` (relative links into ``demos``, so a work
    directory can be moved; links an older run made absolute are made again)."""
    out.mkdir(parents=True, exist_ok=True)
    for p in sorted(demos.glob("sim_*.h5")):
        link = out / p.name
        if int(p.stem.rsplit("_", 1)[1]) < per_scenario and not link.exists():
            link.unlink(missing_ok=True)  # a dangling link
            link.symlink_to(os.path.relpath(p.resolve(), out.resolve()))
    return out


def _demos_per_scenario(demos: Path) -> int:
    """How many layout seeds per scenario ``demos`` was collected for (seeds from 0; an episode the expert failed
    is missing, so the highest seed counts)."""
    seeds = [int(p.stem.rsplit("_", 1)[1]) for p in demos.glob("sim_*.h5")]
    return max(seeds) + 1 if seeds else 0


def _frames(data: list[Path], mode: str = "interventions") -> int:
    if not data:
        return 0
    return sum(len(ep) for ep in load_episodes(data, rollouts=mode, lazy=True, use_hand=False))


def _train_eval(
    args: argparse.Namespace,
    data: list[Path],
    ckpt: Path,
    mode: str | None = None,
    init_from: Path | None = None,
    steps: int | None = None,
) -> tuple[int, int]:
    steps = steps or (args.finetune_steps if init_from is not None and args.finetune_steps else args.steps)
    settings = TrainSettings(
        steps=steps,
        seed=args.seed,
        warmup_steps=min(300, steps // 5),
        eval_every=steps,
        val_fraction=0.0,
    )
    if not (ckpt / "model.safetensors").is_file():
        config = args.config if init_from is None else init_from
        train(config, data, ckpt, settings, rollouts=mode or args.rollouts_mode, init_from=init_from)
    done = ckpt / f"eval_{args.eval_episodes}.json"  # a rerun resumes: an evaluated checkpoint is not run again
    if not done.is_file():
        report = evaluate(ckpt, episodes=args.eval_episodes, seed_offset=EVAL_SEED, perturb=args.perturb)
        log.info("%s: %s", ckpt, report.format().splitlines()[0])
        result = [sum(r.success for r in report.results), sum(r.collision for r in report.results)]
        done.write_text(json.dumps(result))
    ok, hits = json.loads(done.read_text())
    return int(ok), int(hits)


def _minutes(row_dir: Path, t0: float) -> float:
    """Minutes a row took in the run that finished it: kept in ``row_dir``, so a resumed run reports them again."""
    kept = row_dir / "minutes.json"
    if not kept.is_file():
        kept.write_text(json.dumps((time.monotonic() - t0) / 60) + "\n")
    return float(json.loads(kept.read_text()))


class Results:
    """Rows as they come, rewritten whole each time (a run cut short keeps what it measured)."""

    def __init__(self, path: Path, args: argparse.Namespace) -> None:
        self.path, self.args = path, args
        self.rows: list[Row] = []

    def add(self, row: Row) -> None:
        self.rows.append(row)
        log.info("%s", row.markdown())
        a = self.args
        text = [
            "# The data flywheel in simulation (`make flywheel`)",
            "",
            f"Command: `python -m robovlm_node.tools.flywheel {shlex.join(sys.argv[1:])}`; config `{a.config}`, "
            f"{a.steps} training steps from scratch per policy (seed {a.seed})"
            + (
                f", except that round r >= 1 fine-tunes round r-1's policy for {a.finetune_steps or a.steps} steps"
                if not a.retrain
                else ""
            )
            + (f", baselines {a.baseline_steps} steps" if a.baseline_steps and a.baseline_steps != a.steps else "")
            + f", `--rollouts {a.rollouts_mode}`, "
            f"{a.rollouts} rollouts per round through the node over ROS, held-out evaluation on {a.eval_episodes} "
            f"layouts (seeds from {EVAL_SEED}), rooms `--perturb {a.perturb}` throughout. Rows in the order they were "
            "measured.",
            "",
            HEADER,
            *[r.markdown() for r in self.rows],
            "",
        ]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("\n".join(text))
        self.path.with_suffix(".json").write_text(json.dumps([asdict(r) for r in self.rows], indent=2) + "\n")


def _check_work_dir(out: Path, perturb: str, seed: int) -> None:
    """A work directory holds one run: the rooms of one perturbation level and policies of one training seed (a
    rerun with another level or seed would mix them with the rounds already there), so another is refused."""
    marker = out / "run.json"
    if marker.is_file():
        made = json.loads(marker.read_text())
        if made.get("perturb") != perturb:
            raise SystemExit(
                f"{out} was made with --perturb {made.get('perturb')}; use another --out for --perturb {perturb}"
            )
        if made.get("seed", 0) != seed:  # made before the seed was kept: seed 0, the default
            raise SystemExit(f"{out} was made with --seed {made.get('seed', 0)}; use another --out for --seed {seed}")
        return
    if (out / "demos").is_dir() and perturb != "none":  # made before run.json existed: plain rooms
        raise SystemExit(f"{out} was made with --perturb none; use another --out for --perturb {perturb}")
    out.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"perturb": perturb, "seed": seed}) + "\n")


def run(args: argparse.Namespace) -> int:
    out = args.out
    _check_work_dir(out, args.perturb, args.seed)
    results = Results(args.results, args)
    most = max([args.demos, *args.baseline])
    demos = out / "demos"
    have = _demos_per_scenario(demos)
    if have < most:  # a rerun asking for more demonstrations than a first run collected gets the rest
        collect(demos, episodes_per_scenario=most - have, seed_offset=have, image_size=56, perturb=args.perturb)
    start = _subset(demos, out / f"demos_{args.demos}", args.demos)
    demo_frames = _frames([start], "all")
    t0 = time.monotonic()
    ok, hits = _train_eval(args, [start], out / "round0" / "checkpoint")
    results.add(
        Row("flywheel round 0", ok, args.eval_episodes, hits, demo_frames, 0, minutes=_minutes(out / "round0", t0))
    )
    rounds: list[Path] = []
    for r in range(1, args.rounds + 1):
        t0 = time.monotonic()
        record_dir = out / f"round{r}" / "rollouts"
        seeds = [ROLLOUT_SEED + 1000 * r + k for k in range(args.rollouts)]
        if not record_dir.is_dir():  # recorded into a partial directory: a run stopped midway records them again
            partial = record_dir.with_name("rollouts.partial")
            shutil.rmtree(partial, ignore_errors=True)
            rolls = run_rollouts(
                out / f"round{r - 1}" / "checkpoint",
                partial,
                seeds=seeds,
                log_path=out / f"round{r}" / "node.log",
                real_time_factor=args.real_time_factor,
                perturb=args.perturb,
            )
            (out / f"round{r}" / "rollouts.json").write_text(json.dumps([asdict(x) for x in rolls], indent=2))
            partial.rename(record_dir)
        rolls_doc = json.loads((out / f"round{r}" / "rollouts.json").read_text())
        rounds.append(record_dir)
        previous = out / f"round{r - 1}" / "checkpoint"
        ok, hits = _train_eval(
            args, [start, *rounds], out / f"round{r}" / "checkpoint", init_from=None if args.retrain else previous
        )
        results.add(
            Row(
                f"flywheel round {r}",
                ok,
                args.eval_episodes,
                hits,
                demo_frames,
                _frames(rounds),
                rollouts=len(rolls_doc),
                rollout_successes=sum(x["success"] for x in rolls_doc),
                interventions_per_episode=sum(x["interventions"] for x in rolls_doc) / max(1, len(rolls_doc)),
                minutes=_minutes(out / f"round{r}", t0),
            )
        )
    for n in args.baseline:
        t0 = time.monotonic()
        steps = args.baseline_steps or args.steps
        if n == args.demos and steps == args.steps:  # the same data and training as round 0: its row, not a second run
            results.add(dataclasses.replace(results.rows[0], run=f"baseline {n} demos / scenario (= round 0)"))
            continue
        data = _subset(demos, out / f"demos_{n}", n)
        name = f"baseline_{n}" if steps == args.steps else f"baseline_{n}_{steps}steps"
        ok, hits = _train_eval(args, [data], out / name / "checkpoint", steps=steps)
        frames = _frames([data], "all")
        results.add(
            Row(
                f"baseline {n} demos / scenario",
                ok,
                args.eval_episodes,
                hits,
                frames,
                0,
                minutes=_minutes(out / name, t0),
            )
        )
    before_last = None if args.retrain else out / f"round{args.rounds - 1}" / "checkpoint"
    for mode in args.compare_modes if rounds else []:  # the last round's data, trained under another --rollouts
        t0 = time.monotonic()
        ckpt = out / f"round{args.rounds}_{mode}" / "checkpoint"
        ok, hits = _train_eval(args, [start, *rounds], ckpt, mode, init_from=before_last)
        results.add(
            Row(
                f"round {args.rounds} data, --rollouts {mode}",
                ok,
                args.eval_episodes,
                hits,
                demo_frames,
                _frames(rounds),  # the operator's work is the same whatever a mode trains on
                minutes=_minutes(ckpt.parent, t0),
            )
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m robovlm_node.tools.flywheel", description=__doc__)
    p.add_argument("--out", type=Path, default=Path("out") / "flywheel", help="work directory (a rerun resumes)")
    p.add_argument("--results", type=Path, default=Path("bench") / "results" / "flywheel.md")
    p.add_argument("--config", default=str(find_resource("models", "configs") / "demo.json"))
    p.add_argument("--demos", type=int, default=1, help="expert demonstrations per scenario to start from")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--rollouts", type=int, default=24, help="rollouts through the node per round")
    p.add_argument("--steps", type=int, default=1000, help="training steps per policy (from scratch)")
    p.add_argument(
        "--retrain",
        action="store_true",
        help="train each round's policy from scratch instead of fine-tuning the last round's (use another --out: "
        "its rollouts differ)",
    )
    p.add_argument("--finetune-steps", type=int, default=None, help="training steps of a fine-tuning round (--steps)")
    p.add_argument("--eval-episodes", type=int, default=40)
    p.add_argument("--rollouts-mode", choices=ROLLOUT_MODES, default=DEFAULT_ROLLOUT_MODE)
    p.add_argument("--baseline", type=lambda s: [int(x) for x in s.split(",") if x], default=[3, 6, 12])
    p.add_argument(
        "--baseline-steps",
        type=int,
        default=TrainSettings.steps,
        help="training steps of a baseline policy: the demo recipe's (at 1000 the demo model may not yet have left its "
        "plateau: bench/results/training.md)",
    )
    p.add_argument(
        "--compare-modes",
        type=lambda s: [x for x in s.split(",") if x],
        default=[],
        help="after the rounds, train the last round's data under these --rollouts modes too (comma-separated)",
    )
    p.add_argument("--real-time-factor", type=float, default=1.0, help="of the rollouts' simulator")
    p.add_argument(
        "--perturb",
        choices=list(LEVELS),
        default="none",
        help="randomized rooms, camera faults and base dynamics of this level for the demonstrations, the rollouts "
        "and the evaluation (a harder start)",
    )
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    before = signal.signal(signal.SIGTERM, _terminated)
    try:
        return run(args)
    finally:
        signal.signal(signal.SIGTERM, before)


def _terminated(signum: int, _frame: object) -> None:
    """``kill`` (or ``timeout``) of a run: unwind, so the rollouts' node process is stopped, not left driving."""
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    raise SystemExit(main())
