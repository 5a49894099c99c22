"""``robovlm`` command line: one module per command in this package; commands that drive ROS (``replay``) are
contributed by the ``robovlm_node`` package through the ``robovlm.commands`` entry-point group, so this library
never imports ROS and ``robovlm --help`` works without it (listing ``replay`` when the ROS part is installed).

Each command module has ``register(subparsers)``, which adds its parser and sets ``func``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from importlib.metadata import entry_points

from . import (
    collect_sim,
    convert_bags,
    demo,
    eval_sim,
    export,
    import_robovlms_config,
    info,
    init_checkpoint,
    inspect_bag,
    inspect_dataset,
    make_bag,
    serve,
)
from . import train as train_command

COMMANDS = (
    info,
    init_checkpoint,
    import_robovlms_config,
    export,
    make_bag,
    inspect_bag,
    inspect_dataset,
    convert_bags,
    collect_sim,
    train_command,
    eval_sim,
    demo,
    serve,
)
ENTRY_POINT_GROUP = "robovlm.commands"
"""Commands other packages add: ``name = module:register`` (``robovlm_node`` adds ``replay``)."""

log = logging.getLogger("robovlm")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="robovlm",
        description="RoboVLM: inspect, train, evaluate and export the vision-language-action policy of a mobile robot, "
        "and replay recordings through its ROS 2 node.",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(sub)
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        try:
            register = ep.load()
        except ImportError as exc:  # the contributing package is installed without its own dependencies
            log.debug("command %s not available: %s", ep.name, exc)
            continue
        register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    from ..errors import UserError

    try:
        return args.func(args)
    except BrokenPipeError:  # `robovlm inspect-dataset DIR | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's own flush at exit must not fail
        return 0
    except (UserError, OSError) as exc:  # OSError: a file or directory the user named cannot be read or written
        if args.verbose:
            raise
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 2


def _one_line(exc: BaseException) -> str:
    """The error as the user should read it: an OSError as 'reason: path', an error raised in a DataLoader worker
    (which torch re-raises with the worker's traceback in its text) as the original message."""
    if isinstance(exc, OSError) and exc.strerror:
        where = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
        return f"{exc.strerror}: {where}" if where else exc.strerror
    text = str(exc)
    if "Original Traceback" in text:  # torch.utils.data's ExceptionWrapper
        last = text.strip().splitlines()[-1]
        return last.split(": ", 1)[1] if ": " in last else last
    return text
