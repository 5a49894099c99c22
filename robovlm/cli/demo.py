"""``robovlm demo``: the default model step by step on synthetic frames (untrained)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``demo`` to the ``robovlm`` command line."""
    s = sub.add_parser("demo", help="run the default model step by step on synthetic frames (untrained)")
    s.add_argument("--config", default=None, help="model config (default: models/configs/kosmos2_small.json)")
    s.add_argument("--steps", type=int, default=12)
    s.add_argument("--instruction", default="go around the box on the left to the cup")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo_run import run_demo

    return run_demo(config_path=args.config, steps=args.steps, instruction=args.instruction, seed=args.seed)
