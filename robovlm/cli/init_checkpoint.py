"""``robovlm init-checkpoint``: a randomly initialised checkpoint (bring-up, tests)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``init-checkpoint`` to the ``robovlm`` command line."""
    s = sub.add_parser("init-checkpoint", help="write a randomly initialised checkpoint (bring-up, tests)")
    s.add_argument("config")
    s.add_argument("out_dir")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_init_checkpoint)


def cmd_init_checkpoint(args: argparse.Namespace) -> int:
    import torch

    from ..configs.model import load_config
    from ..model.policy import RoboVLM

    out = Path(args.out_dir)
    if out.exists() and not out.is_dir():
        print(f"error: {out} exists and is not a directory; choose another output directory", file=sys.stderr)
        return 2
    torch.manual_seed(args.seed)
    cfg = load_config(args.config)
    model = RoboVLM(cfg, with_clip=False)
    model.save_pretrained(args.out_dir)
    print(f"wrote randomly initialised checkpoint (seed {args.seed}, UNTRAINED) to {args.out_dir}")
    return 0
