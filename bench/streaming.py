"""``make bench``: speed measured side by side in one run, printed as one table of ratios.

1. Resampler on vs off, two cameras, on a PaliGemma-shaped model with the real widths (SigLIP-So400m 1152,
   Gemma-2B 2048 with its 16384 FFN, 8 heads, 1 KV head) and a few layers: tokens into the language model, streaming
   step latency, and the peak of tensor memory one step allocates on top of the loaded model (CPU: every tensor
   storage created during the step, tracked until freed; CUDA: ``max_memory_allocated`` above the model).
2. Streaming ``step()`` vs re-running the whole window every step (what RoboVLMs does), at window 8 and 16, on the
   demo-scale model (``models/configs/kosmos2_small.json``), interleaved round by round. Where a streaming step's
   time goes (window 8, 2-core CPU): encoding the two camera frames (vision encoder, resampler) about 65%, the
   language model over the frame's tokens 18%, per-frame fusion 9%, the window fusion and head 8%; all of it is the
   new frame's own work except the head's output projection at earlier positions, which the step skips.

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

from robovlm.configs.model import RoboVLMConfig, load_config
from robovlm.utils.resources import find_resource

PALIGEMMA_SHAPED = {
    "text_config": {
        "model_type": "gemma",
        "hidden_size": 2048,
        "intermediate_size": 16384,
        "num_hidden_layers": 2,
        "num_attention_heads": 8,
        "num_key_value_heads": 1,
        "head_dim": 256,
        "vocab_size": 259,
    },
    "vision_config": {
        "model_type": "siglip_vision_model",
        "hidden_size": 1152,
        "intermediate_size": 4304,
        "num_hidden_layers": 2,
        "num_attention_heads": 16,
        "image_size": 224,
        "patch_size": 14,
        "projection_dim": 2048,
    },
    "projection_dim": 2048,
}


def paligemma_shaped(*, resampler: bool) -> RoboVLMConfig:
    return RoboVLMConfig.from_dict(
        {
            "backbone": {"type": "paligemma", "tokenizer": "bytes", "config": copy.deepcopy(PALIGEMMA_SHAPED)},
            "image_size": 224,
            "image_mean": [0.5, 0.5, 0.5],
            "image_std": [0.5, 0.5, 0.5],
            "use_vision_resampler": resampler,
            "vision_resampler": {"vis_dim": 1152, "depth": 6, "dim_head": 64, "heads": 8, "num_latents": 64},
            "use_hand_rgb": True,
            "use_state": True,
            "window_size": 8,
            "fwd_pred_next_n": 10,
            "act_head": {"type": "lstm", "hidden_size": 1024, "num_layers": 4},
        }
    )


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
    from robovlm.model.policy import RoboVLM

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
    return {
        "tokens_per_frame": model.tokens_per_frame,
        "latency_ms": statistics.median(times) * 1e3,
        "step_memory_mib": peak / 2**20,
    }


def bench_streaming(window: int, rounds: int, device: torch.device) -> dict:
    """Streaming ``step()`` vs ``forward()`` over the whole window, interleaved: each round times four streaming
    steps and one re-run, so load from other programs falls on both alike. Returns the median ms of each, their
    ratio, and the ratio in each third of the rounds (its spread says how stable the figure is)."""
    from robovlm.model.policy import RoboVLM

    torch.manual_seed(0)
    data = load_config(find_resource("models", "configs", "kosmos2_small.json")).to_dict()
    data["window_size"] = window
    cfg = RoboVLMConfig.from_dict(data)
    model = RoboVLM(cfg, with_clip=False).to(device).eval()
    instruction = "go around the box on the left to the cup"
    frames = [_inputs(cfg, device, i) for i in range(window)]
    batch = {
        "head_images": torch.stack([f[0][0] for f in frames])[None],
        "hand_images": torch.stack([f[1][0] for f in frames])[None],
        "states": torch.stack([f[2][0] for f in frames])[None],
        "instructions": [instruction],
    }

    def timed(fn) -> float:
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        return time.perf_counter() - t0

    stream: list[float] = []
    rerun: list[float] = []
    with torch.inference_mode():
        for i in range(window):  # fill the window: every timed step then runs on a full window
            model.step(*frames[i], instruction)
        model(batch)  # warm-up of the batched path
        for r in range(rounds):
            for k in range(4):
                stream.append(timed(lambda: model.step(*frames[(r * 4 + k) % window], instruction)))
            rerun.append(timed(lambda: model(batch)["actions"][:, -1]))
    third = max(1, rounds // 3)
    blocks = [
        statistics.median(rerun[j : j + third]) / statistics.median(stream[4 * j : 4 * (j + third)])
        for j in range(0, third * 3, third)
    ]
    ms_rerun, ms_stream = statistics.median(rerun) * 1e3, statistics.median(stream) * 1e3
    return {"rerun_ms": ms_rerun, "stream_ms": ms_stream, "ratio": ms_rerun / ms_stream, "blocks": blocks}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.streaming", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--steps", type=int, default=5, help="timed steps per resampler configuration")
    p.add_argument(
        "--rounds", type=int, default=12, help="interleaved rounds (4 streaming steps + 1 re-run) per window size"
    )
    args = p.parse_args(argv)
    device = torch.device(args.device)
    print(f"device: {args.device}, torch {torch.__version__}, threads {torch.get_num_threads()}", flush=True)
    off = bench_resampler(False, args.steps, device)
    on = bench_resampler(True, args.steps, device)
    rows = [
        ("resampler off vs on: PaliGemma-shaped (SigLIP 1152 / Gemma 2048, 2+2 layers), 2 cameras", None),
        (
            "  LM tokens per frame",
            (off["tokens_per_frame"], on["tokens_per_frame"], off["tokens_per_frame"] / on["tokens_per_frame"], ""),
        ),
        (
            "  step latency, median ms",
            (off["latency_ms"], on["latency_ms"], off["latency_ms"] / on["latency_ms"], ">= 1.5x faster"),
        ),
        (
            "  peak memory of one step, MiB",
            (
                off["step_memory_mib"],
                on["step_memory_mib"],
                on["step_memory_mib"] / max(off["step_memory_mib"], 1e-9),
                "<= 0.6x (on/off)",
            ),
        ),
        ("streaming step() vs re-running the window (RoboVLMs), kosmos2_small", None),
    ]
    spreads = []
    for window in (8, 16):
        r = bench_streaming(window, args.rounds, device)
        rows.append(
            (
                f"  window {window}: ms per control step",
                (r["rerun_ms"], r["stream_ms"], r["ratio"], f">= {0.8 * window:.1f}x faster"),
            )
        )
        spreads.append(f"window {window}: " + " / ".join(f"{b:.2f}x" for b in r["blocks"]))
    print(f"\n{'measurement':<44}{'A (off / re-run)':>18}{'B (on / stream)':>18}{'ratio':>9}   goal")
    for name, vals in rows:
        if vals is None:
            print(name)
            continue
        a, b, r, goal = vals
        print(f"{name:<44}{a:>18.1f}{b:>18.1f}{r:>8.2f}x   {goal}")
    print(
        "\nratio: A/B for tokens and latency (higher is better); B/A for memory (lower is better)."
        "\nmemory: peak tensor memory one step allocates above the loaded model and the cached instruction."
        f"\nstreaming ratio in each third of the {args.rounds} interleaved rounds (stability): " + "; ".join(spreads)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
