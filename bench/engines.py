"""``make bench`` (engines): torch eager vs ONNX Runtime per control step, side by side in one run.

Both engines run the same checkpoint's streaming step (one new frame from each camera, the state, a cached
instruction, a full window) on the CPU with the same thread count, interleaved step by step so load from other
programs falls on both alike. Checkpoints: the demo (``models/demo``, 56 px) and ``kosmos2_small`` (224 px, random
init), each exported with ``robovlm export`` into a temporary directory first.

On a GPU (``--device cuda``) the same table is measured with the CUDA providers; TensorRT rows need
``onnxruntime-gpu`` built with TensorRT.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from robovlm.export.exporter import export_checkpoint, streaming_inputs
from robovlm.runtime.engine import limit_threads
from robovlm.runtime.factory import build_engine
from robovlm.utils.resources import find_resource


def _checkpoint(name: str, tmp: Path) -> Path:
    if name == "demo":
        return find_resource("models", "demo")
    from robovlm.configs.model import load_config
    from robovlm.data.stats import NormStats
    from robovlm.model.policy import RoboVLM

    torch.manual_seed(0)
    cfg = load_config(find_resource("models", "configs", f"{name}.json"))
    path = tmp / name
    RoboVLM(cfg, with_clip=False).save_pretrained(
        path, NormStats.identity(state_dim=cfg.state_dim, action_dim=cfg.action_dim)
    )
    return path


def bench_engines(name: str, *, steps: int, device: str, tmp: Path) -> dict:
    """Median ms per step of each engine, interleaved; the largest chunk difference between them."""
    ckpt = _checkpoint(name, tmp)
    exported = tmp / f"{name}_onnx"
    export_checkpoint(ckpt, exported, parity_steps=2)
    engines = {
        "torch": build_engine("torch", ckpt, device=device),
        "onnxruntime": build_engine("onnxruntime", exported, device=device),
    }
    inputs = list(streaming_inputs(engines["torch"].config, 8, seed=1))
    instruction = "go around the box on the left to the cup"
    times: dict[str, list[float]] = {k: [] for k in engines}
    worst = 0.0
    for i in range(steps + engines["torch"].config.window_size):  # the first window_size steps fill the window
        head, hand, state, _ = inputs[i % len(inputs)]
        out = {}
        for key, engine in engines.items():
            t0 = time.perf_counter()
            out[key] = engine.step(head, hand, state, instruction)
            if i >= engines["torch"].config.window_size:
                times[key].append(time.perf_counter() - t0)
        worst = max(worst, float(np.abs(out["torch"] - out["onnxruntime"]).max()))
    return {key: statistics.median(v) * 1e3 for key, v in times.items()} | {"max_abs_diff": worst}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.engines",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=40, help="timed steps per engine and checkpoint")
    p.add_argument(
        "--threads", type=int, nargs="+", default=[1, 2], help="CPU threads of both engines (the node's engine_threads)"
    )
    p.add_argument("--models", nargs="+", default=["demo", "kosmos2_small"])
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    import onnxruntime

    print(f"device: {args.device}, torch {torch.__version__}, onnxruntime {onnxruntime.__version__}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for threads in args.threads:
            limit_threads(threads)
            for name in args.models:
                r = bench_engines(name, steps=args.steps, device=args.device, tmp=Path(tmp))
                rows.append((f"{name}, {threads} thread{'s' * (threads > 1)}", r))
    print(
        f"\n{'engines: ms per control step (median)':<44}{'torch eager':>14}{'onnxruntime':>14}{'ratio':>9}"
        f"{'max |diff|':>12}   goal"
    )
    for label, r in rows:
        print(
            f"  {label:<42}{r['torch']:>14.2f}{r['onnxruntime']:>14.2f}{r['torch'] / r['onnxruntime']:>8.2f}x"
            f"{r['max_abs_diff']:>12.2g}   >= 1.3x faster"
        )
    print("\nratio: torch / onnxruntime (higher: ONNX Runtime faster); max |diff|: action chunk, physical units.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
