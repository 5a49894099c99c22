"""``robovlm collect-sim``: scripted-expert episodes from the simulator, in the user's HDF5 format."""

from __future__ import annotations

import argparse

from .common import at_least


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``collect-sim`` to the ``robovlm`` command line."""
    s = sub.add_parser("collect-sim", help="scripted-expert episodes from the simulator, in the user's HDF5 format")
    s.add_argument("out", help="output directory")
    s.add_argument("--episodes-per-scenario", type=at_least(1), default=10)
    s.add_argument("--seed-offset", type=at_least(0), default=0)
    s.add_argument("--image-size", type=at_least(14), default=56)
    s.add_argument("--noise", type=float, default=0.05, help="std of the noise added to executed commands, m/s")
    s.add_argument("--bags", action="store_true", help="also write each episode as an MCAP rosbag2")
    s.add_argument(
        "--perturb",
        default="none",
        choices=["none", "mild", "strong"],
        help="record under randomized light, surfaces, camera mounts, camera faults and base dynamics",
    )
    s.set_defaults(func=cmd_collect_sim)


def cmd_collect_sim(args: argparse.Namespace) -> int:
    from ..sim.collect import collect

    r = collect(
        args.out,
        episodes_per_scenario=args.episodes_per_scenario,
        seed_offset=args.seed_offset,
        image_size=args.image_size,
        noise=args.noise,
        bags=args.bags,
        perturb=args.perturb,
    )
    print(
        f"wrote {r.episodes} expert episodes ({r.frames} frames) to {args.out}; expert failures skipped: {r.failures}"
    )
    return 0
