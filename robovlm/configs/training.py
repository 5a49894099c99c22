"""Training settings, apart from the trainer so the CLI can show their defaults without importing torch."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TrainSettings:
    steps: int = 2500
    """Optimizer steps in total (a resumed run continues up to this number). The defaults are the settings that
    trained ``models/demo`` (see its model card); ``bench/results/training.md`` measures them across seeds. The
    demo recipe needs the 2500: at 1500 the cosine decay lowers the learning rate before every seed has left the
    lateral plateau (one of three seeds ended at 21/40 closed loop)."""
    batch_size: int = 32
    """Windows per optimizer step."""
    lr: float = 3e-4
    """Peak AdamW learning rate (after warmup, before cosine decay). At 1e-3 the small from-scratch demo model can
    collapse to a constant before it learns to combine instruction and image (bench/results/training.md)."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    warmup_steps: int = 300
    """Linear warmup steps."""
    grad_clip: float = 1.0
    """Gradient norm clip."""
    val_fraction: float = 0.1
    """Fraction of episodes held out per scenario."""
    eval_every: int = 500
    """Steps between validation MAE evaluations and checkpoints."""
    seed: int = 0
    """Seed of Python, NumPy and torch, and of the batch order."""
    augment_shift: int = 3
    """Random camera shift in pixels (training only; ``robovlm.data.augment``)."""
    augment_light: float = 0.0
    """Random brightness (``1 +- light``), contrast and colour gain per window, in [0, 1) (training only)."""
    augment_noise: float = 0.0
    """Largest standard deviation of random pixel noise, 0-255 units (training only)."""
    action_fields: tuple[str, ...] = ("linear.x", "linear.y")
    """Twist fields the model predicts, in order."""
    grad_accum: int = 1
    """Micro-batches per optimizer step; each holds batch_size / grad_accum windows (global, over all processes)."""
    mixed_precision: str = "auto"
    """``no`` | ``bf16`` | ``fp16`` | ``auto`` (bf16 on CUDA, full precision on the CPU)."""
    num_workers: int = 2
    """DataLoader worker processes reading episodes on demand (0: in the training process)."""

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "eval_every", "grad_accum"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        known = ("linear.x", "linear.y", "angular.z")
        if (
            not self.action_fields
            or any(f not in known for f in self.action_fields)
            or len(set(self.action_fields)) != len(self.action_fields)
        ):
            raise ValueError(f"action_fields must be distinct names from {list(known)}, got {list(self.action_fields)}")
        if self.batch_size % self.grad_accum:
            raise ValueError(f"batch_size ({self.batch_size}) must be a multiple of grad_accum ({self.grad_accum})")
        if self.mixed_precision not in ("no", "bf16", "fp16", "auto"):
            raise ValueError(f"mixed_precision must be no, bf16, fp16 or auto, got {self.mixed_precision!r}")
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers}")
        if not (self.lr > 0 and self.grad_clip > 0 and self.warmup_steps >= 0 and self.augment_shift >= 0):
            raise ValueError("lr and grad_clip must be > 0; warmup_steps and augment_shift >= 0")
        if not 0.0 <= self.augment_light < 1.0 or not self.augment_noise >= 0.0:
            raise ValueError(
                f"augment_light must be in [0, 1), augment_noise >= 0; got {self.augment_light}, {self.augment_noise}"
            )
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
