"""``make bench-train``: what fine-tuning costs, side by side in one run, and what the data costs in memory.

1. Fine-tuning modes on ``kosmos2_small`` (random init, two cameras, state, window 8): full fine-tuning, frozen
   vision encoder, LoRA on the language model (vision frozen), each with gradient checkpointing off and on:
   trainable parameters, median optimizer-step time, and peak memory. Each mode runs in a fresh process, so the
   peak (CPU: the process's peak RSS; CUDA: ``max_memory_allocated``) is that mode's alone.
2. Lazy data: peak RSS of indexing N synthetic HDF5 episodes and drawing batches from them with DataLoader workers,
   for N = 200 and 2,000 (and, for reference, loading the 200 into memory the old way).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODES = {
    "full": {},
    "frozen vision": {"freeze_vision": True},
    "LoRA (r 8, vision frozen)": {"freeze_vision": True, "lora": {"r": 8, "alpha": 16}},
}


def _peak_mib(device: str) -> float:
    import torch

    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def synthetic_batch(cfg, batch: int) -> dict:
    """One training batch of random frames, states and actions at ``cfg``'s shapes (both cameras)."""
    import torch

    g = torch.Generator().manual_seed(0)
    t, s = cfg.window_size, cfg.image_size
    return {
        "head_images": torch.randn(batch, t, 3, s, s, generator=g),
        "hand_images": torch.randn(batch, t, 3, s, s, generator=g),
        "hand_valid": torch.ones(batch, t, dtype=torch.bool),
        "states": torch.randn(batch, t, cfg.state_dim, generator=g),
        "instructions": ["go around the box on the left to the cup"] * batch,
        "actions": torch.rand(batch, t, cfg.fwd_pred_next_n, cfg.action_dim, generator=g) * 2 - 1,
        "action_mask": torch.ones(batch, t, cfg.fwd_pred_next_n, dtype=torch.bool),
    }


def run_mode(setup: dict, checkpointing: bool, *, device: str, steps: int, batch: int, config: str, dtype: str) -> dict:
    """One mode in this process: build, train ``steps`` steps on synthetic batches, report."""
    import torch

    from robovlm.configs.model import RoboVLMConfig, load_config
    from robovlm.model.policy import RoboVLM
    from robovlm.training.finetune import apply_train_setup

    torch.manual_seed(0)
    data = load_config(config).to_dict()
    data["train_setup"] = {**setup, "gradient_checkpointing": checkpointing}
    cfg = RoboVLMConfig.from_dict(data)
    model = RoboVLM(cfg).to(device).train()
    apply_train_setup(model)
    params = list(model.trainable_parameters())
    opt = torch.optim.AdamW(params, lr=1e-4)
    b = synthetic_batch(cfg, batch)
    b = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in b.items()}
    amp = getattr(torch, dtype) if dtype != "float32" else None
    times = []
    for i in range(steps + 1):  # the first step warms up
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast(device, dtype=amp, enabled=amp is not None):
            loss = model(b)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device == "cuda":
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - t0)
    return {
        "trainable": sum(p.numel() for p in params),
        "total": sum(p.numel() for p in model.parameters()),
        "step_s": statistics.median(times),
        "peak_mib": _peak_mib(device),
    }


def make_episodes(root: Path, n: int, *, frames: int = 40, size: int = 56) -> Path:
    """``n`` synthetic episodes in the user's HDF5 format (random frames, both cameras, two joints)."""
    import h5py
    import numpy as np

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (frames, size, size, 3), dtype=np.uint8)
    for i in range(n):
        with h5py.File(root / f"synthetic_1box_vert_left_{i:05d}.h5", "w") as f:
            f["images"] = np.roll(img, i, axis=0)
            f["hand_images"] = np.roll(img, i + 1, axis=0)
            f["actions"] = rng.normal(0, 0.1, (frames, 3)).astype(np.float32)
            f["action_event_types"] = np.array(
                ["episode_start"] + ["start_action"] * (frames - 1), dtype=h5py.string_dtype("utf-8")
            )
            js = f.create_dataset("joint_positions", data=rng.normal(0, 0.1, (frames, 2)).astype(np.float32))
            js.attrs["joint_names"] = ["arm_pan", "arm_lift"]
            f.attrs.update(
                {
                    "episode_name": f"synthetic_1box_vert_left_{i}",
                    "total_duration": frames * 0.1,
                    "num_frames": frames,
                    "action_chunk_size": 10,
                }
            )
    return root


def run_data(data: str, lazy: bool, batches: int, workers: int) -> dict:
    """Index (or load) the episodes, draw ``batches`` batches of 32 windows; peak RSS of this process and of the
    largest worker."""
    import torch
    from torch.utils.data import DataLoader

    from robovlm.configs.model import load_config
    from robovlm.data.augment import ImageAugment
    from robovlm.data.dataset import WindowDataset, collate, compute_stats, load_episodes
    from robovlm.utils.resources import find_resource

    t0 = time.perf_counter()
    eps = load_episodes(data, lazy=lazy, use_state=True, state_dim=2)
    index_s = time.perf_counter() - t0
    after_index = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    cfg = load_config(find_resource("models", "configs", "demo.json"))
    stats = compute_stats(eps, action_fields=["linear.x", "linear.y"], joint_names=None, state_dim=2)
    ds = WindowDataset(eps, cfg, stats, augment=ImageAugment(shift=3))
    g = torch.Generator().manual_seed(0)
    loader = DataLoader(ds, batch_size=32, shuffle=True, collate_fn=collate, num_workers=workers, generator=g)
    for i, _ in enumerate(loader):
        if i + 1 >= batches:
            break
    del loader
    return {
        "episodes": len(eps),
        "index_s": index_s,
        "rss_after_index_mib": after_index,
        "rss_peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "worker_peak_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }


def _child(kind: str, **kw) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.training", "--child", json.dumps({"kind": kind, **kw})],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.training", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--config", default=None, help="model config (default: models/configs/kosmos2_small.json)")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--dtype", default="float32", help="autocast dtype (bfloat16 on a GPU)")
    p.add_argument("--episodes", type=int, nargs="+", default=[200, 2000])
    p.add_argument("--skip-data", action="store_true")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        job = json.loads(args.child)
        kind = job.pop("kind")
        print(json.dumps(run_mode(**job) if kind == "mode" else run_data(**job)))
        return 0
    from robovlm.utils.resources import find_resource

    config = args.config or str(find_resource("models", "configs", "kosmos2_small.json"))
    print(
        f"fine-tuning modes: {Path(config).stem}, batch {args.batch}, {args.device}, {args.dtype}; "
        f"{args.steps} timed steps each, a fresh process per mode",
        flush=True,
    )
    print(f"{'mode':<28}{'checkpointing':>14}{'trainable':>14}{'of total':>9}{'s/step':>9}{'peak MiB':>10}")
    for name, setup in MODES.items():
        for ckpt in (False, True):
            r = _child(
                "mode",
                setup=setup,
                checkpointing=ckpt,
                device=args.device,
                steps=args.steps,
                batch=args.batch,
                config=config,
                dtype=args.dtype,
            )
            print(
                f"{name:<28}{'on' if ckpt else 'off':>14}{r['trainable']:>14,}{r['trainable'] / r['total']:>8.1%}"
                f"{r['step_s']:>9.2f}{r['peak_mib']:>10.0f}",
                flush=True,
            )
    print(
        "peak MiB: the process's peak RSS (CPU: weights, optimizer state, activations, allocator) or the CUDA "
        "allocator's peak"
    )
    if args.skip_data:
        return 0
    print(
        "\nlazy data: synthetic episodes (40 frames, two 56 px cameras), 20 batches of 32 windows, 2 workers",
        flush=True,
    )
    print(f"{'episodes':>9}{'loading':>10}{'index s':>9}{'RSS after index':>17}{'peak RSS':>10}{'worker peak':>13}")
    with tempfile.TemporaryDirectory() as tmp:
        for n in sorted(args.episodes):
            data = make_episodes(Path(tmp) / str(n), n)
            modes = (True, False) if n == min(args.episodes) else (True,)
            for lazy in modes:
                r = _child("data", data=str(data), lazy=lazy, batches=20, workers=2)
                print(
                    f"{n:>9}{'lazy' if lazy else 'in memory':>10}{r['index_s']:>9.1f}"
                    f"{r['rss_after_index_mib']:>13.0f} MiB{r['rss_peak_mib']:>6.0f} MiB"
                    f"{r['worker_peak_mib']:>9.0f} MiB",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
