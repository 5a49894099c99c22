"""``robovlm export``: ONNX graphs of the streaming step beside a checkpoint, with a parity report."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import at_least


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``export`` to the ``robovlm`` command line."""
    s = sub.add_parser("export", help="add ONNX graphs of the streaming step to a checkpoint (engine onnxruntime)")
    s.add_argument("checkpoint", metavar="CHECKPOINT")
    s.add_argument("--out", required=True, metavar="DIR", help="checkpoint directory to write (may be CHECKPOINT)")
    s.add_argument("--dtype", choices=["fp32", "fp16"], default="fp32")
    s.add_argument("--opset", type=int, default=17)
    s.add_argument(
        "--quantize",
        choices=["int8", "int4"],
        default=None,
        help="quantized weights with ONNX Runtime's tools: int8 dynamic MatMul, int4 weight-only MatMulNBits (fp32)",
    )
    s.add_argument(
        "--parity-steps", type=at_least(1), default=20, help="control steps compared with torch after export"
    )
    s.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from ..export.exporter import export_checkpoint

    report = export_checkpoint(
        args.checkpoint,
        args.out,
        dtype=args.dtype,
        opset=args.opset,
        parity_steps=args.parity_steps,
        quantize=args.quantize,
    )
    weights = args.dtype + (f", {args.quantize} weights" if args.quantize else "")
    print(
        f"wrote {Path(args.out) / 'onnx'} ({weights}, opset {args.opset}); parity against torch ({report['provider']}):"
    )
    for name, diff in report["graphs_max_abs_diff"].items():
        print(f"  {name:<12} max abs diff {diff:.3g}")
    print(
        f"  end to end   max abs diff {report['end_to_end_max_abs_diff_physical']:.3g} (action chunk, physical "
        f"units, {report['end_to_end_steps']} steps)"
    )
    print(f"run it: robovlm_node --ros-args -p model_path:={args.out} -p engine:=onnxruntime")
    return 0
