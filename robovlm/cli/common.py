"""Helpers every ``robovlm`` command shares: argument types and help texts."""

from __future__ import annotations

import argparse
import math


def at_least(minimum: int):
    """An argparse type: an integer >= ``minimum`` (a count of episodes, steps, ...), refused with a usage error."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


TOPIC_HELP = (
    "bag topic of a role (repeatable): head, hand, joint_states, cmd_vel, instruction; defaults are the "
    "node's topics (/head_camera/image_raw, ...); message types are read from the bag"
)


def milliseconds(text: str) -> float:
    """An argparse type: a finite duration >= 0 in milliseconds, refused with a usage error."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of milliseconds, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def add_recording_options(parser: argparse.ArgumentParser, *, split: bool = True) -> None:
    """The flags that say how recordings become episodes, the same for ``train``, ``inspect-bag``,
    ``convert-bags`` (and ``replay``, without ``--split-episodes``)."""
    parser.add_argument(
        "--instructions",
        metavar="FILE",
        help="instructions per episode: YAML (NAME: text) or CSV (columns episode, instruction); NAME is an episode "
        "(BAG#k), bag or file name or a glob. Precedence: the recording's instruction topic, this file, "
        "--instruction, metadata.yaml custom_data, the HDF5 attribute, models/instructions.json by scenario",
    )
    parser.add_argument("--instruction", metavar="TEXT", help="one instruction for every episode without a closer one")
    if split:
        parser.add_argument(
            "--split-episodes",
            metavar="SOURCE[,SOURCE]",
            help="cut long bags into episodes BAG#k: topic:NAME (Bool or String start/end markers), idle:SECONDS "
            "(no non-zero command for that long), times:FILE (CSV bag,start,end in seconds from the bag's start); "
            "several: the first cuts where it has evidence, the next the rest",
        )


def instruction_sources(args: argparse.Namespace):
    """The ``InstructionSources`` of ``add_recording_options``' flags."""
    from ..data.instructions import InstructionSources

    return InstructionSources(file=args.instructions, text=args.instruction)


def split_sources(args: argparse.Namespace) -> list:
    """The ``--split-episodes`` sources (``robovlm.data.recording``)."""
    from ..data.recording import parse_split

    return parse_split(getattr(args, "split_episodes", None))


def add_dataset_options(parser: argparse.ArgumentParser) -> None:
    """How a LeRobotDataset's features map to our roles (``train``, ``inspect-dataset``)."""
    parser.add_argument(
        "--feature",
        action="append",
        metavar="ROLE=KEY",
        help="LeRobotDataset feature of a role (repeatable): head, hand, state, action; defaults from common key "
        "names (robovlm inspect-dataset proposes them)",
    )
    parser.add_argument(
        "--action-names",
        metavar="FIELD=NAME,...",
        help="the LeRobotDataset action's column for each Twist field, by name (linear.x=vx,angular.z=wz); defaults "
        "for common names (linear_x, vx, ...)",
    )
