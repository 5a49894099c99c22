"""``robovlm import-robovlms-config``: an official RoboVLMs config (its ``parent`` chain included) as a model config."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``import-robovlms-config`` to the ``robovlm`` command line."""
    s = sub.add_parser("import-robovlms-config", help="translate an official RoboVLMs config")
    s.add_argument("src", metavar="IN.json")
    s.add_argument("dst", metavar="OUT.json")
    s.add_argument("--backbone-path", help="local directory of the backbone weights (overrides model_path)")
    s.add_argument("--clip-path", help="local directory of a CLIP text encoder (needed when use_clip_norm)")
    s.set_defaults(func=cmd_import)


def cmd_import(args: argparse.Namespace) -> int:
    from ..configs.model import save_config
    from ..configs.robovlms import ImportRefused, import_robovlms_config, load_robovlms_config

    src = load_robovlms_config(args.src)  # a ConfigError (unreadable, parent missing) is reported by main()
    try:
        cfg, report = import_robovlms_config(src, backbone_path=args.backbone_path, clip_path=args.clip_path)
    except ImportRefused as exc:
        print(exc.report.format())
        print(f"error: {exc}", file=sys.stderr)
        return 2
    save_config(cfg, args.dst)
    print(report.format())
    print(f"wrote {args.dst}")
    print(
        f"train it as RoboVLMs would: robovlm train {args.dst} --data DATA --out CHECKPOINT "
        + " ".join(report.train_flags)
    )
    return 0
