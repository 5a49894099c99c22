"""``robovlm train CONFIG --data DIR --out CKPT_DIR``: behaviour cloning on the user's episodes, on one CPU, one GPU,
several GPUs or several nodes, with the same command.

The loop runs on Hugging Face ``accelerate``: one process by default; under ``torchrun`` (or ``accelerate launch``)
one per device with DDP, or FSDP / DeepSpeed when an accelerate config file says so (``accelerate launch
--config_file FILE -m robovlm.cli train ...``). ``--batch-size`` is global: every optimizer step sees that many
windows whatever the number of processes, cut from one global order (``ShardedBatchSampler``), in ``--grad-accum``
micro-batches. Mixed precision (bf16 on CUDA by default), gradient clipping, linear warmup + cosine decay, fixed
seeds. Only the main process writes the checkpoint (merged for inference), metrics, plots and the model card; the
full training state (model, optimizer, scheduler, random states of every process) is written by accelerate to
``train_state/`` and ``--resume`` continues from it in any mode.

What ``--resume`` trusts: the progress this module writes (step, loss and validation history) is JSON, and the
weights are safetensors, so a crafted file there cannot run code. ``train_state/`` holds accelerate's own files
(optimizer and scheduler state, pickled random states), which are loaded as trusted local state: resume only from
an output directory you wrote yourself.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..configs.model import ConfigError, load_config
from ..configs.training import TrainSettings
from ..data.augment import ImageAugment
from ..data.dataset import WindowDataset, collate, compute_stats, cosine_with_warmup, load_episodes, split_episodes
from ..data.instructions import InstructionSources
from ..data.recording import SplitSource
from ..data.roles import TopicMap
from ..data.rollout import DEFAULT_ROLLOUT_MODE
from ..data.sampler import ShardedBatchSampler
from ..model.policy import RoboVLM
from ..utils.hub import write_model_card
from .finetune import apply_train_setup, format_parameter_table
from .learning_check import NO_LEARNING_RATIO, MaskedMAE, baseline_mae, describe, mean_action, not_learned

log = logging.getLogger(__name__)
VAL_BATCH_FACTOR = 4
"""Validation batches hold this many micro-batches. Without gradients a forward pass keeps no activations for a
backward one: on kosmos2_small (CPU) a forward of 32 windows peaked 2.4 GB above the loaded model, a training step
of 8 windows 5.3 GB. A small model spends much of a forward pass in per-call overhead: three training tests took
59 s with validation at the micro-batch size, 49 s with it four times larger."""

STATE_FILE = "train_progress.json"
"""Progress (step, loss history, validation history), written by the main process as JSON (never pickle)."""
OLD_STATE_FILE = "train_state.pt"
"""The same progress as written by earlier versions; read with ``weights_only=True`` (no code runs)."""
STATE_DIR = "train_state"
"""accelerate's state: model (unmerged, adapters included), optimizer, scheduler, random states per process."""


def seed_everything(seed: int) -> None:
    """The same seed and data give the same run on the same machine: initialization, data order (the sampler's own
    seed), augmentation (seeded per window) and the CPU kernels are deterministic. What is not: CUDA kernels without a
    deterministic version (warned about, not refused, by ``use_deterministic_algorithms(warn_only=True)``), the
    order of floating-point sums across data-parallel processes, and a different CPU thread count (torch splits its
    sums by thread: the same seed on another machine or beside ``OMP_NUM_THREADS=1`` gives another, equally valid
    run)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


@torch.no_grad()
def validation_mae(model: RoboVLM, loader: DataLoader, device: torch.device) -> dict[str, float]:
    """Mean absolute error per action field, in physical units, over every masked action of every window."""
    model.eval()
    acc = MaskedMAE(model.stats)
    for batch in loader:
        batch = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}
        acc.add(model(batch)["actions"], batch["actions"], batch["action_mask"])
    model.train()
    return acc.result()


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
    for field in val[0]["mae"] if val else {}:
        ax[1].plot([v["step"] for v in val], [v["mae"][field] for v in val], marker="o", label=field)
    ax[1].set(xlabel="step", ylabel="MAE (m/s)", title="validation MAE (held-out episodes)")
    if val:
        ax[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _accelerator(settings: TrainSettings, device: str | None):
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    mp = settings.mixed_precision
    if mp == "auto":
        mp = "bf16" if dev == "cuda" else "no"
    # Unused parameters are normal here (the hand-missing marker when every hand frame is present, ...).
    return Accelerator(
        cpu=dev == "cpu",
        mixed_precision=mp,
        gradient_accumulation_steps=settings.grad_accum,
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )


def _differences(wanted: Any, have: Any, at: str = "") -> list[str]:
    """Dotted paths where ``have`` disagrees with ``wanted``; a checkpoint's saved backbone config spells out every
    default, so only the keys ``wanted`` names are compared inside a dict."""
    if isinstance(wanted, dict) and isinstance(have, dict):
        return [d for k in wanted for d in _differences(wanted[k], have.get(k), f"{at}.{k}" if at else str(k))]
    return [] if wanted == have else [at]


def _same_model(wanted: Any, have: Any, config_path: str | Path, ckpt: str | Path) -> None:
    """Fine-tuning keeps the checkpoint's architecture: a config that differs is a mistake, said by field."""
    differ = _differences(asdict(wanted), asdict(have))
    if differ:
        raise ConfigError(
            f"{config_path} differs from {ckpt}'s config in {', '.join(differ)}; fine-tuning keeps the "
            f"checkpoint's model (pass its directory as the config)"
        )


def train(
    config_path: str | Path,
    data_dir: str | Path | Sequence[str | Path],
    out_dir: str | Path,
    settings: TrainSettings,
    *,
    resume: bool = False,
    device: str | None = None,
    topics: TopicMap | None = None,
    joint_names: list[str] | None = None,
    instructions: InstructionSources | None = None,
    split: list[SplitSource] | None = None,
    rollouts: str = DEFAULT_ROLLOUT_MODE,
    features: list[str] | None = None,
    action_names: str | None = None,
    probe: Callable[[RoboVLM, DataLoader], dict[str, Any]] | None = None,
    init_from: str | Path | None = None,
) -> dict:
    """Train on the HDF5 episodes and rosbag2 directories in ``data_dir`` (one or several; bags read by role,
    ``topics``, and cut into episodes by ``split``; instructions from ``instructions``, ``robovlm.data.instructions``;
    the node's rollout recordings by ``rollouts``, ``robovlm.data.rollout``).

    ``probe(model, val_loader)``: extra measurements at each evaluation (``bench.learning``), kept in the validation
    history beside the MAE. ``init_from``: fine-tune that checkpoint (its weights, normalization and joint names, with
    a fresh optimizer and schedule); ``config_path`` must describe the same model."""
    acc = _accelerator(settings, device)
    main = acc.is_main_process
    out = Path(out_dir)
    micro = settings.batch_size // settings.grad_accum
    if micro % acc.num_processes:
        raise ConfigError(
            f"batch size {settings.batch_size} / grad_accum {settings.grad_accum} = {micro} windows per "
            f"micro-step cannot be split over {acc.num_processes} processes"
        )
    seed_everything(settings.seed)
    resuming = resume and (out / STATE_DIR).is_dir()
    start = out if resuming else init_from
    if start is not None:  # the checkpoint's own config, stats and joint names: the run continues as it started
        if not resuming:
            _same_model(load_config(config_path), load_config(start), config_path, start)
        model = RoboVLM.from_pretrained(start, device="cpu", load_clip=load_config(start).use_clip_norm).train()
        config, stats = model.config, model.stats
        joint_names = joint_names or stats.joint_names or None
        log.info("%s %s", "resuming" if resuming else "fine-tuning", start)
    else:
        config = load_config(config_path)
    if len(settings.action_fields) != config.action_dim:
        raise ConfigError(
            f"{config_path}: action_dim is {config.action_dim} but {len(settings.action_fields)} action "
            f"fields are trained ({', '.join(settings.action_fields)}); set --action-fields to match"
        )
    episodes = load_episodes(
        data_dir,
        instructions,
        split=split,
        rollouts=rollouts,
        features=features,
        action_names=action_names,
        topics=topics,
        joint_names=joint_names,
        use_state=config.use_state,
        state_dim=config.state_dim,
        use_hand=config.use_hand_rgb,
        image_size=config.image_size,
        lazy=True,
    )  # an index; frames are read by the loader's workers
    if main:  # only once the data is readable: bad data leaves no empty output directory behind
        out.mkdir(parents=True, exist_ok=True)
    train_eps, val_eps = split_episodes(episodes, settings.val_fraction)
    log.info("%d episodes: %d train, %d validation", len(episodes), len(train_eps), len(val_eps))
    if start is None:
        stats = compute_stats(
            train_eps, action_fields=list(settings.action_fields), joint_names=None, state_dim=config.state_dim
        )
        model = RoboVLM(config).train()
        model.stats = stats
    apply_train_setup(model)
    if main:
        log.info(
            "%d process(es) on %s, %s; parameters (train_setup %s):\n%s",
            acc.num_processes,
            acc.device,
            acc.mixed_precision,
            model.config.train_setup,
            format_parameter_table(model),
        )

    augment = ImageAugment(shift=settings.augment_shift, light=settings.augment_light, noise=settings.augment_noise)
    train_ds = WindowDataset(train_eps, model.config, stats, augment=augment, seed=settings.seed)
    sampler = ShardedBatchSampler(
        len(train_ds), global_batch=micro, rank=acc.process_index, world=acc.num_processes, seed=settings.seed
    )
    loader = DataLoader(
        train_ds,
        batch_sampler=sampler,
        collate_fn=collate,
        num_workers=settings.num_workers,
        persistent_workers=settings.num_workers > 0,
    )
    val_loader = None
    if val_eps and main:
        val_loader = DataLoader(
            WindowDataset(val_eps, model.config, stats),
            batch_size=micro * VAL_BATCH_FACTOR,
            shuffle=False,
            collate_fn=collate,
            num_workers=settings.num_workers,
            # its own generator: each pass over it draws its workers' seed, which must not come from the training
            # run's random stream (how often it evaluates would change the run)
            generator=torch.Generator().manual_seed(settings.seed),
        )
    baseline: dict[str, float] = {}
    if val_loader is not None:  # the mean predictor's score: what "learned" is measured against
        baseline = baseline_mae(val_loader, stats, mean_action(train_eps, list(settings.action_fields)))
        log.info("mean predictor's validation MAE %s", {k: round(v, 4) for k, v in baseline.items()})
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: cosine_with_warmup(s, warmup=settings.warmup_steps, total=settings.steps)
    )
    model, opt, sched = acc.prepare(model, opt, sched)
    inner = acc.unwrap_model(model)
    step, history, val_hist = 0, [], []
    if resuming:
        acc.load_state(str(out / STATE_DIR))
        progress = _read_progress(out)
        step, history, val_hist = progress["step"], progress["history"], progress["val"]
        log.info("resumed at step %d", step)

    t0 = time.perf_counter()
    bar = tqdm(total=settings.steps, initial=step, desc="train", unit="step", disable=not main)
    epoch = step // max(1, len(loader) // settings.grad_accum)
    running = torch.zeros((), device=acc.device)
    try:  # the bar ends its line before any error is printed
        while step < settings.steps:
            sampler.set_epoch(epoch)
            epoch += 1
            for batch in loader:
                batch = {
                    k: (v.to(acc.device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()
                }
                if acc.num_processes > 1:  # the global batch's mean, whatever share of it this process holds
                    batch["loss_normalizer"] = acc.reduce(batch["action_mask"].sum().float(), "sum") / acc.num_processes
                with acc.accumulate(model):
                    with acc.autocast():
                        out_ = model(batch)
                    loss = out_["loss"]
                    acc.backward(loss)
                    running += loss.detach() / settings.grad_accum
                    if acc.sync_gradients:
                        acc.clip_grad_norm_(inner.trainable_parameters(), settings.grad_clip)
                    opt.step()
                    sched.step()
                    opt.zero_grad(set_to_none=True)
                if not acc.sync_gradients:
                    continue
                mean_loss = float(acc.reduce(running, "mean").item())  # over the micro-steps and the processes
                running.zero_()
                if not np.isfinite(mean_loss):
                    raise FloatingPointError(f"loss is {mean_loss} at step {step}; lower the learning rate")
                step += 1
                rec = {"step": step, "loss": mean_loss, "lr": sched.get_last_lr()[0]}
                if "clip_loss" in out_:
                    rec["clip_loss"] = float(out_["clip_loss"].item())
                history.append(rec)
                bar.update(1)
                bar.set_postfix({k: f"{v:.4f}" for k, v in rec.items() if k in ("loss", "clip_loss")})
                if step % settings.eval_every == 0 or step == settings.steps:
                    if val_loader is not None:
                        mae = validation_mae(inner, val_loader, acc.device)
                        stuck = not_learned(mae, baseline)
                        val_hist.append({"step": step, "mae": mae, "not_learned": stuck})
                        if probe is not None:
                            val_hist[-1]["probe"] = probe(inner, val_loader)
                        log.info("step %d val MAE %s", step, describe(mae, baseline))
                        if len(val_hist) >= 2 and stuck and all(v.get("not_learned") for v in val_hist[-2:]):
                            log.warning(
                                "step %d: not learning %s: validation MAE within %d%% of the mean predictor's at the "
                                "last two evaluations; the model ignores what decides them (python -m bench.learning "
                                "measures which input)",
                                step,
                                ", ".join(stuck),
                                round((1 - NO_LEARNING_RATIO) * 100),
                            )
                    _save(acc, model, step, history, val_hist, out)
                if step >= settings.steps:
                    break
    finally:
        bar.close()
    metrics = {
        "steps": step,
        "train_seconds": time.perf_counter() - t0,
        "final_loss": history[-1]["loss"],
        "final_val_mae": val_hist[-1]["mae"] if val_hist else None,
        "val_history": val_hist,
        "baseline_val_mae": baseline or None,
        "not_learned": val_hist[-1]["not_learned"] if val_hist else None,
        "processes": acc.num_processes,
        "train_episodes": len(train_eps),
        "val_episodes": len(val_eps),
        "settings": asdict(settings),
    }
    if main:
        _plot(history, val_hist, out / "loss_curve.png")
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        write_model_card(
            out,
            inner.config,
            datasets=[Path(d).resolve().name for d in ([data_dir] if isinstance(data_dir, (str, Path)) else data_dir)],
            metrics=metrics["final_val_mae"],
            overwrite=True,
        )
    acc.wait_for_everyone()
    acc.end_training()
    return metrics


def _save(acc, model, step: int, history: list, val: list, out: Path) -> None:
    """Every process takes part (FSDP and DeepSpeed gather shards); the main process writes."""
    acc.wait_for_everyone()
    acc.save_state(str(out / STATE_DIR))
    weights = acc.get_state_dict(model)
    if acc.is_main_process:
        acc.unwrap_model(model).save_pretrained(out, weights=weights)
        tmp = out / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps({"step": step, "history": history, "val": val}) + "\n")
        tmp.replace(out / STATE_FILE)
    acc.wait_for_everyone()


def _read_progress(out: Path) -> dict:
    """Step, loss history and validation history of an interrupted run; a clear error when unreadable."""
    path = out / STATE_FILE
    try:
        if path.is_file():
            progress = json.loads(path.read_text())
        elif (out / OLD_STATE_FILE).is_file():
            path = out / OLD_STATE_FILE
            progress = torch.load(path, map_location="cpu", weights_only=True)
        else:
            raise ConfigError(
                f"cannot resume from {out}: {STATE_FILE} is missing (train_state/ without it is an "
                "interrupted save); start again without --resume"
            )
        return {"step": int(progress["step"]), "history": list(progress["history"]), "val": list(progress["val"])}
    except ConfigError:
        raise
    except Exception as exc:  # JSON errors, pickles that weights_only refuses, missing keys
        raise ConfigError(f"cannot resume from {path}: {type(exc).__name__}: {exc}") from exc
