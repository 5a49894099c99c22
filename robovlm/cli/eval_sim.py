"""``robovlm eval-sim``: closed-loop success rate in the simulator."""

from __future__ import annotations

import argparse

from ..runtime.scheduler import MODES
from .common import at_least, milliseconds


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``eval-sim`` to the ``robovlm`` command line."""
    s = sub.add_parser("eval-sim", help="closed-loop success rate in the simulator")
    s.add_argument("--checkpoint", required=True)
    s.add_argument("--episodes", type=at_least(1), default=40)
    s.add_argument("--seed-offset", type=at_least(0), default=100_000, help="first seed (training uses seeds from 0)")
    s.add_argument("--ablate", choices=["image", "instruction"])
    s.add_argument("--chunk-mode", default="ensemble", choices=list(MODES))
    s.add_argument("--device", default="cpu")
    s.add_argument(
        "--engine", default="torch", choices=["torch", "onnxruntime"], help="onnxruntime: the checkpoint's ONNX export"
    )
    s.add_argument(
        "--inference-latency-ms",
        type=milliseconds,
        default=0.0,
        help="a chunk becomes available this long after the model starts on its frame (the model keeps running on "
        "the newest frame, so a slow model skips frames)",
    )
    s.add_argument(
        "--camera-latency-ms", type=milliseconds, default=0.0, help="a frame reaches the model this long after capture"
    )
    s.add_argument("--latency-jitter-ms", type=milliseconds, default=0.0, help="uniform [0, MS] added to each latency")
    s.add_argument(
        "--perturb",
        default="none",
        choices=["none", "mild", "strong"],
        help="randomized light, surfaces, camera mounts, camera faults and base dynamics (robovlm/sim/perturb.py)",
    )
    s.set_defaults(func=cmd_eval_sim)


def cmd_eval_sim(args: argparse.Namespace) -> int:
    from ..sim.evaluate import evaluate
    from ..sim.latency import LatencySettings

    report = evaluate(
        args.checkpoint,
        episodes=args.episodes,
        seed_offset=args.seed_offset,
        ablate=args.ablate,
        chunk_mode=args.chunk_mode,
        device=args.device,
        engine_name=args.engine,
        perturb=args.perturb,
        latency=LatencySettings(
            inference_ms=args.inference_latency_ms, camera_ms=args.camera_latency_ms, jitter_ms=args.latency_jitter_ms
        ),
    )
    print(report.format())
    return 0
