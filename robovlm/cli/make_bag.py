"""``robovlm make-bag``: one HDF5 teleop episode as a rosbag2 for replay."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``make-bag`` to the ``robovlm`` command line."""
    s = sub.add_parser("make-bag", help="turn one HDF5 teleop episode into a rosbag2 for replay")
    s.add_argument("episode", metavar="EPISODE.h5")
    s.add_argument("out_bag", metavar="OUT_BAG")
    s.add_argument("--storage", choices=["sqlite3", "mcap"], default="sqlite3")
    s.add_argument("--instructions", help="scenario id -> sentence JSON (default: models/instructions.json)")
    s.add_argument("--static-joints", help="fixed joint pose for episodes without joint data: name=value,...")
    s.set_defaults(func=cmd_make_bag)


def cmd_make_bag(args: argparse.Namespace) -> int:
    from ..data.bag_writer import episode_to_bag
    from ..data.hdf5 import load_instructions, read_hdf5_episode

    static = None
    if args.static_joints:
        try:
            static = {k: float(v) for k, v in (item.split("=", 1) for item in args.static_joints.split(","))}
        except ValueError:
            print(
                f"error: --static-joints must look like name=0.1,other=0.2, got {args.static_joints!r}", file=sys.stderr
            )
            return 2
    ep = read_hdf5_episode(args.episode, load_instructions(args.instructions))
    counts = episode_to_bag(ep, args.out_bag, storage=args.storage, static_joints=static)
    print(
        f"episode {ep.name}: {len(ep)} frames at {1.0 / ep.frame_dt:.1f} Hz, scenario {ep.scenario}, "
        f"instruction {ep.instruction!r}"
    )
    for topic, n in counts.items():
        print(f"  {topic}: {n} messages")
    print(f"wrote {args.out_bag} ({args.storage})")
    return 0
