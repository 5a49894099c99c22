"""``robovlm make-bag``: HDF5 teleop episodes as a rosbag2 for replay, one episode or a long recording of several."""

from __future__ import annotations

import argparse
import sys

from .common import add_recording_options, at_least, instruction_sources


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``make-bag`` to the ``robovlm`` command line."""
    s = sub.add_parser(
        "make-bag",
        help="turn HDF5 teleop episodes into a rosbag2 for replay (several: one long recording with resets)",
    )
    s.add_argument("paths", nargs="+", metavar="EPISODE.h5 [EPISODE.h5 ...] OUT_BAG")
    s.add_argument("--storage", choices=["sqlite3", "mcap"], default="sqlite3")
    add_recording_options(s, split=False)
    s.add_argument("--static-joints", help="fixed joint pose for episodes without joint data: name=value,...")
    s.add_argument("--reset-s", type=float, default=3.0, help="seconds of reset (still robot, zero command) between")
    s.add_argument("--marker-topic", help="std_msgs/String 'start'/'end' episode markers on this topic")
    s.add_argument("--marked", metavar="K,K", help="only these episodes (0-based) get markers (default: all)")
    s.add_argument(
        "--no-instruction-topic", action="store_true", help="write no instruction topic (most teams record none)"
    )
    s.add_argument("--custom-data", action="append", metavar="KEY=VALUE", help="rosbag2 custom_data (repeatable)")
    s.set_defaults(func=cmd_make_bag)


def _pairs(items: list[str], flag: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{flag} takes KEY=VALUE, got {item!r}")
        out[key.strip()] = value
    return out


def cmd_make_bag(args: argparse.Namespace) -> int:
    from ..data.bag_writer import recording_to_bag
    from ..data.hdf5 import read_hdf5_episode

    if len(args.paths) < 2:
        print("error: give at least one EPISODE.h5 and the OUT_BAG directory", file=sys.stderr)
        return 2
    *episodes, out_bag = args.paths
    try:
        static = (
            {k: float(v) for k, v in _pairs(args.static_joints.split(","), "--static-joints").items()}
            if (args.static_joints)
            else None
        )
        custom = _pairs(args.custom_data or [], "--custom-data")
        marked = {at_least(0)(k) for k in args.marked.split(",")} if args.marked else None
    except (ValueError, argparse.ArgumentTypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    sources = instruction_sources(args)
    eps = [read_hdf5_episode(path, sources) for path in episodes]
    counts = recording_to_bag(
        eps,
        out_bag,
        storage=args.storage,
        static_joints=static,
        reset_s=args.reset_s,
        marker_topic=args.marker_topic,
        marked=marked,
        instruction_topic=not args.no_instruction_topic,
        custom_data=custom,
    )
    for k, ep in enumerate(eps):
        print(
            f"episode {k} {ep.name}: {len(ep)} frames at {1.0 / ep.frame_dt:.1f} Hz, scenario {ep.scenario}, "
            f"instruction {ep.instruction!r}" + (f" ({ep.instruction_source})" if ep.instruction_source else "")
        )
    for topic, n in counts.items():
        print(f"  {topic}: {n} messages")
    print(f"wrote {out_bag} ({args.storage})")
    return 0
