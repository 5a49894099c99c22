"""``robovlm replay``, contributed to the ``robovlm`` command line by this ROS package (entry-point group
``robovlm.commands``): the library never imports ROS, and this module imports the replay (rclpy) only when the
command runs, so ``robovlm --help`` stays fast."""

from __future__ import annotations

import argparse
import importlib.util
import sys

from robovlm.cli.common import TOPIC_HELP, add_recording_options, instruction_sources


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``replay`` when rclpy can be imported (a ROS 2 install or the ``ros`` extra)."""
    try:
        ros = importlib.util.find_spec("rclpy") is not None
    except (ImportError, ValueError):  # a broken or shadowed install counts as none
        ros = False
    if not ros:
        return
    s = sub.add_parser("replay", help="play a rosbag2 into the node over DDS and report what it commanded")
    s.add_argument("bag", metavar="BAG")
    s.add_argument("--model", required=True, help="checkpoint directory")
    s.add_argument("--topic", action="append", metavar="ROLE=TOPIC", help=TOPIC_HELP)
    s.add_argument("--rate", type=float, default=1.0, help="playback rate")
    s.add_argument("--out", help="output bag directory for cmd_vel and /diagnostics")
    add_recording_options(s, split=False)
    s.add_argument("-p", "--param", action="append", metavar="NAME:=VALUE", help="node parameter override")
    s.set_defaults(func=cmd_replay)


def cmd_replay(args: argparse.Namespace) -> int:
    import yaml

    from robovlm.data.roles import TopicMap

    from .replay import ReplayError, replay

    params = {}
    for item in args.param or []:
        key, sep, value = item.partition(":=")
        if not sep or not key:
            print(f"error: -p takes NAME:=VALUE, got {item!r}", file=sys.stderr)
            return 2
        params[key] = yaml.safe_load(value)  # the same typing as ROS's own `-p name:=value`
    try:
        report = replay(
            args.bag,
            args.model,
            topics=TopicMap.from_flags(args.topic),
            rate=args.rate,
            out=args.out,
            instruction=args.instruction,
            instructions=instruction_sources(args),
            params=params,
        )
    except ReplayError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(report.format())
    if report.inferences == 0:
        print("error: the model never ran (see the faults above)", file=sys.stderr)
        return 1
    return 0
