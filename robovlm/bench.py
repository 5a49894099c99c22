"""``make bench``: speed measured side by side in one run, printed as one table of ratios.

1. Resampler on vs off, two cameras, on a PaliGemma-shaped model with the real widths (SigLIP-So400m 1152,
   Gemma-2B 2048 with its 16384 FFN, 8 heads, 1 KV head) and a few layers: tokens into the language model, streaming
   step latency, and the peak of tensor memory one step allocates on top of the loaded model (CPU: every tensor
   storage created during the step, tracked until freed; CUDA: ``max_memory_allocated`` above the model).
2. Streaming ``step()`` vs re-running the whole window every step (what RoboVLMs does), at window 8 and 16, on the
   demo-scale model (``models/configs/kosmos2_small.json``).

Absolute times on a shared 2-core CPU are noisy; the ratios, measured in the same run, are the result.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from .config import RoboVLMConfig, load_config
from .resources import find_resource


PALIGEMMA_SHAPED = {
    "text_config": {"model_type": "gemma", "hidden_size": 2048, "intermediate_size": 16384, "num_hidden_layers": 2,
                    "num_attention_heads": 8, "num_key_value_heads": 1, "head_dim": 256, "vocab_size": 259},
    "vision_config": {"model_type": "siglip_vision_model", "hidden_size": 1152, "intermediate_size": 4304,
                      "num_hidden_layers": 2, "num_attention_heads": 16, "image_size": 224, "patch_size": 14,
                      "projection_dim": 2048},
    "projection_dim": 2048,
}


def paligemma_shaped(*, resampler: bool) -> RoboVLMConfig:
    return RoboVLMConfig.from_dict({
        "backbone": {"type": "paligemma", "tokenizer": "bytes", "config": copy.deepcopy(PALIGEMMA_SHAPED)},
        "image_size": 224, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
        "use_vision_resampler": resampler,
        "vision_resampler": {"vis_dim": 1152, "depth": 6, "dim_head": 64, "heads": 8, "num_latents": 64},
        "use_hand_rgb": True, "use_state": True, "window_size": 8, "fwd_pred_next_n": 10,
        "act_head": {"type": "lstm", "hidden_size": 1024, "num_layers": 4},
    })


def _inputs(cfg: RoboVLMConfig, device: torch.device, seed: int):
    g = torch.Generator().manual_seed(seed)
    s = cfg.image_size
    head = torch.randn(1, 3, s, s, generator=g).to(device)
    hand = torch.randn(1, 3, s, s, generator=g).to(device)
    state = torch.randn(1, cfg.state_dim, generator=g).to(device)
    return head, hand, state


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class PeakTensorMemory(TorchDispatchMode):
    """Peak bytes of tensor storage created inside the context and still alive, i.e. what a step adds on top of
    the tensors that existed before (weights, cached instruction keys/values). Views share their base's storage and
    are counted once; storages are released when their last reference dies."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._seen: set[int] = set()

    def _free(self, key: int, nbytes: int) -> None:
        self._seen.discard(key)
        self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                key = id(storage)
                if key in self._seen:
                    continue
                self._seen.add(key)
                self.live += storage.nbytes()
                self.peak = max(self.peak, self.live)
                weakref.finalize(storage, self._free, key, storage.nbytes())
        return out


def bench_resampler(resampler: bool, steps: int, device: torch.device) -> dict:
    """Median streaming-step latency and the peak memory of one step, for the PaliGemma-shaped model."""
    from .model.policy import RoboVLM

    torch.manual_seed(0)
    cfg = paligemma_shaped(resampler=resampler)
    model = RoboVLM(cfg, with_clip=False).to(device).eval()
    instruction = "go around the two boxes on the left to the cup"
    times = []
    for i in range(steps + 1):
        head, hand, state = _inputs(cfg, device, i)
        _sync(device)
        t0 = time.perf_counter()
        model.step(head, hand, state, instruction)
        _sync(device)
        if i > 0:  # the first step also encodes the instruction
            times.append(time.perf_counter() - t0)
    head, hand, state = _inputs(cfg, device, steps + 1)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        model.step(head, hand, state, instruction)
        peak = torch.cuda.max_memory_allocated() - before
    else:
        with PeakTensorMemory() as mem:
            model.step(head, hand, state, instruction)
        peak = mem.peak
    return {"tokens_per_frame": model.tokens_per_frame, "latency_ms": statistics.median(times) * 1e3,
            "step_memory_mib": peak / 2**20}


def bench_streaming(window: int, steps: int, device: torch.device) -> tuple[float, float]:
    """Median ms per control step: streaming ``step()`` vs ``forward()`` over the whole window."""
    from .model.policy import RoboVLM

    torch.manual_seed(0)
    data = load_config(find_resource("models", "configs", "kosmos2_small.json")).to_dict()
    data["window_size"] = window
    cfg = RoboVLMConfig.from_dict(data)
    model = RoboVLM(cfg, with_clip=False).to(device).eval()
    instruction = "go around the box on the left to the cup"
    frames = [_inputs(cfg, device, i) for i in range(window)]
    stream = []
    with torch.inference_mode():
        for i in range(window + steps):  # fill the window first, then time full-window steps
            head, hand, state = frames[i % window]
            _sync(device)
            t0 = time.perf_counter()
            model.step(head, hand, state, instruction)
            _sync(device)
            if i >= window:
                stream.append(time.perf_counter() - t0)
        batch = {"head_images": torch.stack([f[0][0] for f in frames])[None],
                 "hand_images": torch.stack([f[1][0] for f in frames])[None],
                 "states": torch.stack([f[2][0] for f in frames])[None], "instructions": [instruction]}
        rerun = []
        for i in range(max(2, steps // 4) + 1):
            _sync(device)
            t0 = time.perf_counter()
            model(batch)["actions"][:, -1]
            _sync(device)
            if i > 0:
                rerun.append(time.perf_counter() - t0)
    return statistics.median(rerun) * 1e3, statistics.median(stream) * 1e3


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m robovlm.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--steps", type=int, default=5, help="timed steps per configuration")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    print(f"device: {args.device}, torch {torch.__version__}, threads {torch.get_num_threads()}", flush=True)
    off = bench_resampler(False, args.steps, device)
    on = bench_resampler(True, args.steps, device)
    rows = [
        ("resampler off vs on: PaliGemma-shaped (SigLIP 1152 / Gemma 2048, 2+2 layers), 2 cameras", None),
        ("  LM tokens per frame", (off["tokens_per_frame"], on["tokens_per_frame"],
                                   off["tokens_per_frame"] / on["tokens_per_frame"], "")),
        ("  step latency, median ms", (off["latency_ms"], on["latency_ms"], off["latency_ms"] / on["latency_ms"],
                                       ">= 1.5x faster")),
        ("  peak memory of one step, MiB", (off["step_memory_mib"], on["step_memory_mib"],
                                              on["step_memory_mib"] / max(off["step_memory_mib"], 1e-9),
                                              "<= 0.6x (on/off)")),
        ("streaming step() vs re-running the window (RoboVLMs), kosmos2_small", None),
    ]
    for window in (8, 16):
        rerun, stream = bench_streaming(window, max(args.steps, 4), device)
        rows.append((f"  window {window}: ms per control step", (rerun, stream, rerun / stream,
                                                                  f">= {0.8 * window:.1f}x faster")))
    print(f"\n{'measurement':<44}{'A (off / re-run)':>18}{'B (on / stream)':>18}{'ratio':>9}   goal")
    for name, vals in rows:
        if vals is None:
            print(name)
            continue
        a, b, r, goal = vals
        print(f"{name:<44}{a:>18.1f}{b:>18.1f}{r:>8.2f}x   {goal}")
    print("\nratio: A/B for tokens and latency (higher is better); B/A for memory (lower is better)."
          "\nmemory: peak tensor memory one step allocates above the loaded model and the cached instruction.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
