"""``python -m bench.robustness`` (``make eval-robustness``): closed-loop success under latency and a changed room.

A grid of ``robovlm eval-sim`` runs on held-out layouts: inference latency x chunk mode x perturbation level, every
cell with the same camera latency and episodes; then the image-blind and instruction-blind ablations at the default
chunk mode in the issue's target condition (``strong``, camera 100 ms, inference 300 ms). Per cell: success,
collisions, the scheduler's smoothness before the safety filter (mean |jerk|, largest step, ticks the filter had to
limit) and the frames a busy model skipped. Writes ``bench/results/closed_loop.md``, a plot of success against
inference latency and a contact sheet of ``strong`` frames (``perturb_strong.jpg``). Cells are kept in ``--work`` as
they finish (an interrupted run resumes); they run in ``--jobs`` processes of one thread each.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from robovlm.runtime.scheduler import MODES
from robovlm.sim.perturb_sheet import contact_sheet

log = logging.getLogger("bench.robustness")
TARGET = {"perturb": "strong", "camera_ms": 100.0, "inference_ms": 300.0}


def run_cell(checkpoint: str, episodes: int, cell: dict) -> dict:
    """One ``eval-sim`` run in this (worker) process."""
    import numpy as np
    import torch

    from robovlm.sim.evaluate import evaluate
    from robovlm.sim.latency import LatencySettings

    torch.set_num_threads(1)
    t0 = time.monotonic()
    report = evaluate(
        checkpoint,
        episodes=episodes,
        seed_offset=100_000,
        ablate=cell.get("ablate"),
        chunk_mode=cell["mode"],
        perturb=cell["perturb"],
        latency=LatencySettings(inference_ms=cell["inference_ms"], camera_ms=cell["camera_ms"]),
    )
    smooth = [r.smoothness for r in report.results if r.smoothness is not None]
    return {
        **cell,
        "success": sum(r.success for r in report.results),
        "episodes": len(report.results),
        "collisions": sum(r.collision for r in report.results),
        "jerk": float(np.mean([m.mean_abs_jerk for m in smooth])),
        "max_step": float(max(m.max_step for m in smooth)),
        "limited": float(np.mean([m.limited_fraction for m in smooth])),
        "no_action": float(np.mean([m.no_action_fraction for m in smooth])),
        "skipped": sum(r.frames_skipped for r in report.results),
        "seconds": time.monotonic() - t0,
    }


def key(cell: dict) -> str:
    return json.dumps(cell, sort_keys=True)


def cells(args: argparse.Namespace) -> list[dict]:
    grid = [
        {"perturb": p, "mode": m, "inference_ms": float(lat), "camera_ms": args.camera_latency_ms}
        for p in args.perturb.split(",")
        for m in args.modes.split(",")
        for lat in args.latencies.split(",")
    ]
    ablations = [{**TARGET, "mode": args.default_mode, "ablate": a} for a in ("image", "instruction")]
    target = {**TARGET, "mode": args.default_mode}
    return grid + ([target] if key(target) not in {key(c) for c in grid} else []) + ablations


def write_results(args: argparse.Namespace, done: dict[str, dict], wall: float) -> None:
    rows = [done[key(c)] for c in cells(args) if key(c) in done]
    lines = [
        "# Closed loop under latency and a changed room (issue 20)",
        "",
        f"`python -m bench.robustness --checkpoint {args.checkpoint} --episodes {args.episodes} --latencies "
        f"{args.latencies} --modes {args.modes} --perturb {args.perturb} --camera-latency-ms "
        f"{args.camera_latency_ms:g}` (`make eval-robustness` runs the whole grid at 40): {args.episodes} held-out "
        f"episodes per cell (layouts 100000+), camera latency {args.camera_latency_ms:g} ms in the grid, "
        f"{wall / 60:.0f} min of this run on {args.jobs} process(es). "
        "*Jerk*: mean |second difference| of the scheduler's command over dt^2 (m/s^3); *step*: its largest change "
        "between ticks (m/s); *limited*: ticks on which the safety filter had to limit acceleration; *no action*: "
        "ticks without a due action (the robot held still).",
        "",
        "| perturb | chunk mode | inference ms | camera ms | ablate | success | collisions | jerk | step | limited "
        "| no action | frames skipped |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['perturb']} | {r['mode']} | {r['inference_ms']:g} | {r['camera_ms']:g} | {r.get('ablate') or '-'} "
            f"| {r['success']}/{r['episodes']} | {r['collisions']} | {r['jerk']:.2f} | {r['max_step']:.3f} "
            f"| {100 * r['limited']:.1f}% | {100 * r['no_action']:.1f}% | {r['skipped']} |"
        )
    lines += summary(rows, args.default_mode)
    Path(args.results).write_text("\n".join(lines) + "\n")
    plot(rows, Path(args.results).with_suffix(".png"))


def summary(rows: list[dict], default_mode: str) -> list[str]:
    """Per chunk mode over the grid (success, smoothness), and the issue's targets read off the rows."""
    grid = [r for r in rows if not r.get("ablate") and r["camera_ms"] != TARGET["camera_ms"]]
    out = ["", "Per chunk mode over the grid above (every perturbation and latency):", ""]
    out += [
        "| chunk mode | success | mean jerk | mean largest step | mean limited |",
        "| --- | --- | --- | --- | --- |",
    ]
    for mode in sorted({r["mode"] for r in grid}):
        m = [r for r in grid if r["mode"] == mode]
        out.append(
            f"| {mode} | {sum(r['success'] for r in m)}/{sum(r['episodes'] for r in m)} "
            f"| {sum(r['jerk'] for r in m) / len(m):.2f} | {sum(r['max_step'] for r in m) / len(m):.3f} "
            f"| {100 * sum(r['limited'] for r in m) / len(m):.1f}% |"
        )

    def at(ablate: str | None) -> dict | None:
        want = {**TARGET, "mode": default_mode}
        return next((r for r in rows if all(r[k] == v for k, v in want.items()) and r.get("ablate") == ablate), None)

    target, blind, deaf = at(None), at("image"), at("instruction")
    if target is not None:
        pct = 100 * target["success"] / target["episodes"]
        out += [
            "",
            f"Targets at the default mode ({default_mode}), `strong`, camera 100 ms, inference 300 ms: success "
            f"{pct:.0f}% (target at least 80%); safety filter limited {100 * target['limited']:.1f}% of ticks "
            "(target at most 5%)",
        ]
        for name, r in (("image-blind", blind), ("instruction-blind", deaf)):
            if r is not None:
                ablated = 100 * r["success"] / r["episodes"]
                out[-1] += f"; {name} {ablated:.0f}% ({pct - ablated:.0f} points lower, target at least 30)"
        out[-1] += "."
    return out


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    lines: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for r in rows:
        if not r.get("ablate"):
            lines.setdefault((r["perturb"], r["mode"]), []).append((r["inference_ms"], r["success"] / r["episodes"]))
    for (perturb, mode), pts in sorted(lines.items()):
        pts.sort()
        style = {"none": "-", "mild": "--", "strong": ":"}.get(perturb, "-")
        ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], style, marker="o", label=f"{mode}, {perturb}")
    ax.set_xlabel("inference latency (ms)")
    ax.set_ylabel("success (%)")
    ax.set_ylim(-5, 105)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.robustness", description=__doc__)
    p.add_argument("--checkpoint", default="models/demo")
    p.add_argument("--episodes", type=int, default=40)
    p.add_argument("--latencies", default="0,100,200,300,400", help="inference latencies, ms")
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--perturb", default="none,mild,strong")
    p.add_argument("--camera-latency-ms", type=float, default=50.0)
    p.add_argument("--default-mode", default="ensemble", choices=list(MODES), help="the mode of the ablations")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--work", type=Path, default=Path("out/robustness"))
    p.add_argument("--results", default="bench/results/closed_loop.md")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args.work.mkdir(parents=True, exist_ok=True)
    store = args.work / f"{Path(args.checkpoint).name}_{args.episodes}.json"
    done: dict[str, dict] = json.loads(store.read_text()) if store.is_file() else {}
    sheet = Path(args.results).with_name("perturb_strong.jpg")
    contact_sheet("strong", str(sheet), image_size=64)  # what the policy faces at ``strong``
    todo = [c for c in cells(args) if key(c) not in done]
    t0 = time.monotonic()
    # spawned, not forked: this process has made an OpenGL context (the contact sheet), which a fork cannot inherit
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {key(c): pool.submit(run_cell, args.checkpoint, args.episodes, c) for c in todo}
        for k, future in futures.items():
            done[k] = future.result()
            store.write_text(json.dumps(done))
            log.info("%s: %d/%d", k, done[k]["success"], done[k]["episodes"])
    write_results(args, done, sum(r["seconds"] for r in done.values()) / args.jobs or time.monotonic() - t0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
