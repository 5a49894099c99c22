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
