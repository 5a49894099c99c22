"""``robovlm train CONFIG --data DIR --out CKPT_DIR``: behaviour cloning on the user's HDF5 episodes.

AdamW over ``RoboVLM.trainable_parameters()`` (never the frozen CLIP encoder), linear warmup + cosine decay,
gradient clipping, bf16 autocast on CUDA, fixed seeds, validation MAE per action field (physical units) on held-out
episodes, the CLIP-norm loss logged when on, a loss-curve PNG, and resume from the output directory.
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from .config import ConfigError, load_config
from .data.dataset import WindowDataset, collate, compute_stats, cosine_with_warmup, load_episodes, split_episodes
from .data.roles import TopicMap
from .data.stats import NormStats
from .finetune import adapter_state, apply_train_setup, format_parameter_table, has_lora
from .hub import write_model_card
from .model.policy import RoboVLM
from .train_settings import TrainSettings

log = logging.getLogger(__name__)

STATE_FILE = "train_state.pt"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@torch.no_grad()
def validation_mae(model: RoboVLM, loader: DataLoader, device: torch.device) -> dict[str, float]:
    """Mean absolute error per action field, in physical units, over every masked action of every window."""
    model.eval()
    stats = model.stats
    scale = (np.asarray(stats.action_high) - np.asarray(stats.action_low)) / 2.0
    err, count = np.zeros(len(scale)), 0
    for batch in loader:
        batch = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}
        pred = model(batch)["actions"].float()
        mask = batch["action_mask"].float()[..., None]
        err += ((pred - batch["actions"]).abs() * mask).sum((0, 1, 2)).cpu().numpy() * scale
        count += int(mask.sum().item())
    model.train()
    return {f: float(e / max(count, 1)) for f, e in zip(stats.action_fields, err)}


def _plot(history: list[dict], val: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    steps = [h["step"] for h in history]
    ax[0].plot(steps, [h["loss"] for h in history], lw=0.8, label="loss")
    if history and "clip_loss" in history[0]:
        ax[0].plot(steps, [h["clip_loss"] for h in history], lw=0.8, label="clip loss")
    ax[0].set(xlabel="step", ylabel="training loss", yscale="log", title="training")
    ax[0].legend()
    for field in (val[0]["mae"] if val else {}):
        ax[1].plot([v["step"] for v in val], [v["mae"][field] for v in val], marker="o", label=field)
    ax[1].set(xlabel="step", ylabel="MAE (m/s)", title="validation MAE (held-out episodes)")
    if val:
        ax[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def train(config_path: str | Path, data_dir: str | Path, out_dir: str | Path, settings: TrainSettings, *,
          resume: bool = False, device: str | None = None, topics: TopicMap | None = None,
          joint_names: list[str] | None = None) -> dict:
    """Train on the HDF5 episodes and rosbag2 directories in ``data_dir`` (bags read by role, ``topics``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    seed_everything(settings.seed)
    config = load_config(config_path)
    if len(settings.action_fields) != config.action_dim:
        raise ConfigError(f"{config_path}: action_dim is {config.action_dim} but {len(settings.action_fields)} action "
                          f"fields are trained ({', '.join(settings.action_fields)}); set --action-fields to match")
    if resume and joint_names is None and (out / "stats.json").exists():
        joint_names = NormStats.load(out / "stats.json").joint_names or None
    episodes = load_episodes(data_dir, topics=topics, joint_names=joint_names, use_state=config.use_state,
                             state_dim=config.state_dim, use_hand=config.use_hand_rgb, image_size=config.image_size)
    train_eps, val_eps = split_episodes(episodes, settings.val_fraction)
    log.info("%d episodes: %d train, %d validation", len(episodes), len(train_eps), len(val_eps))
    if resume and (out / STATE_FILE).exists():
        model = RoboVLM.from_pretrained(out, load_clip=config.use_clip_norm, device=dev).train()
        stats = model.stats
        state = torch.load(out / STATE_FILE, map_location="cpu", weights_only=False)
        apply_train_setup(model)
        if state.get("adapters"):  # the unmerged base weights and adapters: resume exactly where it stopped
            model.load_state_dict(state["adapters"], strict=False)
    else:
        stats = compute_stats(train_eps, action_fields=list(settings.action_fields), joint_names=None,
                              state_dim=config.state_dim)
        model = RoboVLM(config).to(dev).train()
        model.stats = stats
        state = None
        apply_train_setup(model)
    log.info("parameters (train_setup %s):\n%s", model.config.train_setup, format_parameter_table(model))
    train_ds = WindowDataset(train_eps, model.config, stats, augment_shift=settings.augment_shift)
    val_loader = None
    if val_eps:
        val_loader = DataLoader(WindowDataset(val_eps, model.config, stats), batch_size=settings.batch_size,
                                shuffle=False, collate_fn=collate)
    g = torch.Generator().manual_seed(settings.seed)
    loader = DataLoader(train_ds, batch_size=settings.batch_size, shuffle=True, drop_last=True, collate_fn=collate,
                        generator=g)
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: cosine_with_warmup(s, warmup=settings.warmup_steps, total=settings.steps))
    step, history, val_hist = 0, [], []
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        step, history, val_hist = state["step"], state["history"], state["val"]
        torch.set_rng_state(state["torch_rng"])
        log.info("resumed at step %d", step)

    amp = dev.type == "cuda"
    t0 = time.perf_counter()
    bar = tqdm(total=settings.steps, initial=step, desc="train", unit="step")
    while step < settings.steps:
        for batch in loader:
            if step >= settings.steps:
                break
            batch = {k: (v.to(dev, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
                out_ = model(batch)
            loss = out_["loss"]
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss is {loss.item()} at step {step}; lower the learning rate")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.trainable_parameters(), settings.grad_clip)
            opt.step()
            sched.step()
            step += 1
            rec = {"step": step, "loss": float(loss.item()), "lr": sched.get_last_lr()[0]}
            if "clip_loss" in out_:
                rec["clip_loss"] = float(out_["clip_loss"].item())
            history.append(rec)
            bar.update(1)
            bar.set_postfix({k: f"{v:.4f}" for k, v in rec.items() if k in ("loss", "clip_loss")})
            if step % settings.eval_every == 0 or step == settings.steps:
                if val_loader is not None:
                    mae = validation_mae(model, val_loader, dev)
                    val_hist.append({"step": step, "mae": mae})
                    log.info("step %d val MAE %s", step, {k: round(v, 4) for k, v in mae.items()})
                _save(model, opt, sched, step, history, val_hist, out)
    bar.close()
    _plot(history, val_hist, out / "loss_curve.png")
    metrics = {"steps": step, "train_seconds": time.perf_counter() - t0, "final_loss": history[-1]["loss"],
               "final_val_mae": val_hist[-1]["mae"] if val_hist else None,
               "train_episodes": len(train_eps), "val_episodes": len(val_eps), "settings": asdict(settings)}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    write_model_card(out, model.config, datasets=[Path(data_dir).resolve().name], metrics=metrics["final_val_mae"],
                     overwrite=True)
    return metrics


def _save(model: RoboVLM, opt, sched, step: int, history: list, val: list, out: Path) -> None:
    model.save_pretrained(out)
    torch.save({"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "step": step, "history": history,
                "val": val, "torch_rng": torch.get_rng_state(),
                "adapters": adapter_state(model) if has_lora(model) else None}, out / STATE_FILE)
