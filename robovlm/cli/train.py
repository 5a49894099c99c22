"""``robovlm train``: behaviour cloning on HDF5 episodes and rosbag2 recordings (``robovlm.training``)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from .common import TOPIC_HELP, add_dataset_options, add_recording_options, at_least, instruction_sources, split_sources


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``train`` to the ``robovlm`` command line."""
    from ..configs.training import TrainSettings
    from ..data.rollout import DEFAULT_ROLLOUT_MODE, ROLLOUT_MODES

    d = TrainSettings()
    s = sub.add_parser(
        "train",
        help="train a checkpoint on HDF5 episodes and rosbag2 recordings (one process, or "
        "several under torchrun / accelerate launch)",
    )
    s.add_argument("config")
    s.add_argument(
        "--data",
        required=True,
        action="append",
        help="directory of *.h5 episodes, rosbag2 and LeRobotDataset v3.0 directories (or one of them); repeatable: "
        "demonstrations and the rollouts of every round together",
    )
    s.add_argument(
        "--rollouts",
        choices=ROLLOUT_MODES,
        default=DEFAULT_ROLLOUT_MODE,
        help="what the node's rollout recordings teach: the operator's interventions only, those and every frame "
        f"of an episode marked success, or every frame (default {DEFAULT_ROLLOUT_MODE}; docs/flywheel.md)",
    )
    s.add_argument("--out", required=True, help="checkpoint directory")
    s.add_argument("--topic", action="append", metavar="ROLE=TOPIC", help=TOPIC_HELP)
    s.add_argument("--joints", metavar="NAME,NAME", help="state joints by name, in order (default: the data's)")
    add_recording_options(s)
    add_dataset_options(s)
    s.add_argument(
        "--action-fields",
        metavar="FIELD,FIELD",
        help=f"Twist fields the model predicts, in order (default: {','.join(d.action_fields)}; the "
        "config's action_dim must match)",
    )
    s.add_argument("--steps", type=at_least(1), default=d.steps)
    s.add_argument("--batch-size", type=at_least(1), default=d.batch_size)
    s.add_argument("--lr", type=float, default=d.lr)
    s.add_argument("--warmup-steps", type=at_least(0), default=d.warmup_steps)
    s.add_argument("--weight-decay", type=float, default=None, help=f"AdamW weight decay (default {d.weight_decay})")
    s.add_argument(
        "--grad-accum",
        type=at_least(1),
        default=d.grad_accum,
        help="micro-batches per optimizer step (--batch-size stays the global batch)",
    )
    s.add_argument(
        "--mixed-precision",
        default=d.mixed_precision,
        choices=["auto", "no", "bf16", "fp16"],
        help="auto: bf16 on CUDA, full precision on the CPU",
    )
    s.add_argument("--num-workers", type=at_least(0), default=d.num_workers, help="DataLoader worker processes")
    s.add_argument("--eval-every", type=at_least(1), default=d.eval_every)
    s.add_argument(
        "--val-fraction",
        type=float,
        default=d.val_fraction,
        help="share of each scenario's episodes held out for validation (every k-th episode)",
    )
    s.add_argument("--seed", type=int, default=d.seed)
    s.add_argument("--augment-shift", type=at_least(0), default=d.augment_shift, help="camera shift, pixels")
    s.add_argument(
        "--augment-light", type=float, default=d.augment_light, help="brightness, contrast, colour jitter in [0, 1)"
    )
    s.add_argument("--augment-noise", type=float, default=d.augment_noise, help="pixel noise std, 0-255 units")
    s.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    s.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    s.add_argument(
        "--init-from",
        metavar="CHECKPOINT",
        help="fine-tune this checkpoint (weights, normalization; fresh optimizer and schedule); the config must "
        "describe the same model (its directory does)",
    )
    s.add_argument(
        "--allow-no-learning",
        action="store_true",
        help="exit 0 even when the final model is no better than predicting the mean action (smoke runs)",
    )
    s.set_defaults(func=cmd_train)


def _joints(text: str | None) -> list[str] | None:
    names = [n.strip() for n in (text or "").split(",") if n.strip()]
    return names or None


def cmd_train(args: argparse.Namespace) -> int:
    from ..data.roles import TopicMap
    from ..training.learning_check import NO_LEARNING_RATIO, describe
    from ..training.trainer import TrainSettings, train

    extra: dict[str, Any] = {}
    if args.action_fields:
        extra["action_fields"] = tuple(f.strip() for f in args.action_fields.split(","))
    if args.weight_decay is not None:
        extra["weight_decay"] = args.weight_decay
    extra.update(grad_accum=args.grad_accum, mixed_precision=args.mixed_precision, num_workers=args.num_workers)
    try:
        settings = TrainSettings(
            steps=args.steps,
            batch_size=args.batch_size,
            lr=args.lr,
            seed=args.seed,
            eval_every=args.eval_every,
            warmup_steps=args.warmup_steps,
            val_fraction=args.val_fraction,
            augment_shift=args.augment_shift,
            augment_light=args.augment_light,
            augment_noise=args.augment_noise,
            **extra,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    existed = out.exists()
    try:
        m = train(
            args.config,
            args.data,
            out,
            settings,
            resume=args.resume,
            init_from=args.init_from,
            device=args.device,
            topics=TopicMap.from_flags(args.topic),
            joint_names=_joints(args.joints),
            instructions=instruction_sources(args),
            split=split_sources(args),
            rollouts=args.rollouts,
            features=args.feature,
            action_names=args.action_names,
        )
    except BaseException:  # bad data found mid-run (a damaged file), Ctrl-C: no empty output directory stays
        if not existed and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        raise
    if int(os.environ.get("RANK", "0")) != 0:  # torchrun / accelerate launch: the main process reports
        return 0
    print(
        f"trained {m['steps']} steps in {m['train_seconds'] / 60:.1f} min on {m['train_episodes']} episodes; "
        f"final loss {m['final_loss']:.4f}"
    )
    if m["final_val_mae"]:
        print("validation MAE (held-out episodes): " + describe(m["final_val_mae"], m["baseline_val_mae"] or {}))
    else:
        print("no validation episodes: whether the model learned was not checked")
    print(f"checkpoint, loss_curve.png and metrics.json in {args.out}")
    if m["not_learned"]:
        verdict = "allowed by --allow-no-learning" if args.allow_no_learning else "exit 3"
        print(
            f"error: the model did not learn {', '.join(m['not_learned'])}: its validation MAE is within "
            f"{round((1 - NO_LEARNING_RATIO) * 100)}% of predicting the training set's mean action ({verdict})",
            file=sys.stderr,
        )
        return 0 if args.allow_no_learning else 3
    return 0
