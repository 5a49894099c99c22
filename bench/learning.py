"""``python -m bench.learning``: does a training recipe learn to use the instruction and the image, seed after seed?

Trains a recipe (a model config and ``robovlm train`` settings) for each seed with the real trainer, and at every
evaluation measures, on the held-out episodes:

- validation MAE per field beside the mean predictor's (``robovlm.training.learning_check``);
- instruction sensitivity: how far the predicted lateral command moves when the instruction names the other side
  (``left`` <-> ``right``); a model that ignores the instruction scores ~0, a correct one about the expert's lateral
  speed;
- image sensitivity: how far the actions move when every head-camera frame is replaced by the batch's mean frame;
- the gradient norm reaching each part of the model (text embeddings, language layers, vision, resampler, head) on one
  fixed training batch.

One JSON line per evaluation goes to ``--out`` (default ``out/learning.jsonl``); the summary is printed as a Markdown
table. Data: ``--data`` (``robovlm collect-sim`` output).

``--dependence`` trains nothing: it prints how much of each action field the side (from the instruction), the
detour's progress (from the image; tenths of the episode) and both together explain in the data (R^2 and the MAE of
predicting each group's mean), which says what a model must combine to learn each field.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from robovlm.configs.training import TrainSettings
from robovlm.model.policy import RoboVLM
from robovlm.training.trainer import train

GROUPS = (  # parameter name prefix -> group, first match wins
    ("backbone.model.text_model.model.embed_tokens", "text_embed"),
    ("backbone.model.text_model", "language"),
    ("backbone.model.vision_model", "vision"),
    ("resampler", "resampler"),
    ("vision_projector", "resampler"),
    ("action_token", "action_token"),
    ("head", "head"),
)
MAX_BATCHES = 4


def mirrored(text: str) -> str:
    """The instruction for the other side."""
    return text.replace("left", "\0").replace("right", "left").replace("\0", "right")


@torch.no_grad()
def sensitivity(model: RoboVLM, loader: DataLoader) -> dict[str, Any]:
    """Mean |change| of the predicted actions (physical units) under a mirrored instruction and under mean frames."""
    model.eval()
    scale = (np.asarray(model.stats.action_high) - np.asarray(model.stats.action_low)) / 2.0
    d_instr, d_image, n = np.zeros(len(scale)), np.zeros(len(scale)), 0
    for i, batch in enumerate(loader):
        if i >= MAX_BATCHES:
            break
        base = model(batch)["actions"]  # (B, T, n, A)
        swapped = model({**batch, "instructions": [mirrored(s) for s in batch["instructions"]]})["actions"]
        grey = batch["head_images"].mean(dim=(0, 1), keepdim=True).expand_as(batch["head_images"])
        blind = model({**batch, "head_images": grey})["actions"]
        mask = batch["action_mask"].float()[..., None]
        d_instr += ((swapped - base).abs() * mask).sum((0, 1, 2)).numpy() * scale
        d_image += ((blind - base).abs() * mask).sum((0, 1, 2)).numpy() * scale
        n += int(mask.sum())
    model.train()
    fields = model.stats.action_fields
    return {
        "instruction_sensitivity": {f: float(v / max(n, 1)) for f, v in zip(fields, d_instr)},
        "image_sensitivity": {f: float(v / max(n, 1)) for f, v in zip(fields, d_image)},
    }


def grad_norms(model: RoboVLM, batch: dict[str, Any]) -> dict[str, float]:
    """Gradient norm per parameter group for one batch (the optimizer's state is not touched)."""
    was = [p.grad for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    with torch.random.fork_rng():  # dropout draws here must not shift the training run's random stream
        model(batch)["loss"].backward()
    sq: dict[str, float] = {}
    for name, p in model.named_parameters():
        if p.grad is None:
            continue
        group = next((g for prefix, g in GROUPS if name.startswith(prefix)), "other")
        sq[group] = sq.get(group, 0.0) + float(p.grad.float().pow(2).sum())
    for p, g in zip(model.parameters(), was):
        p.grad = g
    return {g: v**0.5 for g, v in sorted(sq.items())}


def dependence(data: str) -> str:
    """R^2 and MAE of the group-mean predictor of each action field, grouped by side, progress and both."""
    from robovlm.data.dataset import load_episodes

    eps = load_episodes(data, lazy=True, use_state=False, state_dim=2, use_hand=False, image_size=56)
    acts = np.concatenate([e.actions[:, :2] for e in eps])
    side = np.concatenate([np.full(len(e.actions), 1 if (e.scenario or "").endswith("left") else -1) for e in eps])
    tenth = np.concatenate([np.minimum(np.linspace(0, 1, len(e.actions)) * 10, 9).astype(int) for e in eps])
    lines = [
        "| grouped by | linear.x R^2 | linear.x MAE | linear.y R^2 | linear.y MAE |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, groups in (
        ("nothing (mean predictor)", np.zeros_like(side)),
        ("side (instruction)", side),
        ("progress (image)", tenth),
        ("side x progress", side * 100 + tenth),
    ):
        cells = []
        for col in (0, 1):
            target, pred = acts[:, col], np.zeros(len(acts))
            for g in np.unique(groups):
                pred[groups == g] = target[groups == g].mean()
            r2 = 1 - ((target - pred) ** 2).sum() / ((target - target.mean()) ** 2).sum()
            cells += [f"{r2:.3f}", f"{np.abs(target - pred).mean():.4f}"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run(config: str, data: str, out_dir: Path, settings: TrainSettings, log_path: Path) -> dict[str, Any]:
    fixed: dict[str, Any] = {}

    def probe(model: RoboVLM, val_loader: DataLoader) -> dict[str, Any]:
        if "batch" not in fixed:
            fixed["batch"] = next(iter(val_loader))
        return {**sensitivity(model, val_loader), "grad_norm": grad_norms(model, fixed["batch"])}

    t0 = time.perf_counter()
    metrics = train(config, data, out_dir, settings, device="cpu", probe=probe)
    row = {
        "config": config,
        "seed": settings.seed,
        "steps": settings.steps,
        "minutes": (time.perf_counter() - t0) / 60,
        "baseline": metrics["baseline_val_mae"],
        "history": metrics["val_history"],
    }
    with log_path.open("a") as f:
        f.write(json.dumps(row) + "\n")
    return row


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| config | seed | step | MAE linear.x / mean pred. | MAE linear.y / mean pred. | instr. sens. y "
        "| image sens. x | grad text_embed | min |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        for h in r["history"]:
            m, b, p = h["mae"], r["baseline"], h.get("probe", {})
            lines.append(
                f"| {Path(r['config']).stem} | {r['seed']} | {h['step']} "
                f"| {m['linear.x']:.4f} / {b['linear.x']:.4f} | {m['linear.y']:.4f} / {b['linear.y']:.4f} "
                f"| {p.get('instruction_sensitivity', {}).get('linear.y', float('nan')):.4f} "
                f"| {p.get('image_sensitivity', {}).get('linear.x', float('nan')):.4f} "
                f"| {p.get('grad_norm', {}).get('text_embed', float('nan')):.2e} | {r['minutes']:.1f} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.learning", description=__doc__)
    ap.add_argument("config", nargs="?", help="model config (not needed with --dependence)")
    ap.add_argument("--dependence", action="store_true", help="only the data analysis (see above)")
    ap.add_argument("--data", required=True)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--eval-every", type=int, default=200)
    ap.add_argument("--lr", type=float, default=TrainSettings.lr)
    ap.add_argument("--warmup-steps", type=int, default=TrainSettings.warmup_steps)
    ap.add_argument("--action-fields", default="linear.x,linear.y")
    ap.add_argument("--val-fraction", type=float, default=TrainSettings.val_fraction)
    ap.add_argument("--batch-size", type=int, default=TrainSettings.batch_size)
    ap.add_argument("--work", default="out/learning_runs")
    ap.add_argument("--out", default="out/learning.jsonl")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.dependence:
        print(dependence(args.data))
        return 0
    if not args.config:
        ap.error("a model config is needed to train")
    base = TrainSettings(
        steps=args.steps,
        eval_every=args.eval_every,
        lr=args.lr,
        warmup_steps=args.warmup_steps,
        val_fraction=args.val_fraction,
        batch_size=args.batch_size,
        action_fields=tuple(args.action_fields.split(",")),
    )
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        out_dir = Path(args.work) / f"{Path(args.config).stem}_s{seed}"
        rows.append(run(args.config, args.data, out_dir, replace(base, seed=seed), Path(args.out)))
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
