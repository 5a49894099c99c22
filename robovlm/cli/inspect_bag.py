"""``robovlm inspect-bag``: topics, types, counts and rates of a rosbag2, and a proposed role mapping."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``inspect-bag`` to the ``robovlm`` command line."""
    s = sub.add_parser("inspect-bag", help="topics, types, counts and rates of a rosbag2, and a proposed role mapping")
    s.add_argument("bag", metavar="BAG")
    s.set_defaults(func=cmd_inspect_bag)


def cmd_inspect_bag(args: argparse.Namespace) -> int:
    from ..data.bag import bag_topics
    from ..data.roles import ROLES, propose_mapping

    info = bag_topics(args.bag, timing=True)
    width = max([len(t) for t in info] + [5])
    print(f"{args.bag}: {len(info)} topics, {sum(i.count for i in info.values())} messages")
    print(f"  {'topic':<{width}}  {'type':<36} {'count':>7} {'rate':>9}")
    for topic, i in sorted(info.items()):
        print(f"  {topic:<{width}}  {i.msgtype:<36} {i.count:>7} {i.rate_hz:>6.1f} Hz")
    proposal = propose_mapping({t: (i.msgtype, i.count) for t, i in info.items()})
    print("\nproposed mapping (roles the bag lacks are left out):")
    for role in ROLES:
        print(f"  {role:<13} {proposal.get(role, '(none)')}")
    flags = " ".join(f"--topic {r}={proposal[r]}" for r in ROLES if r in proposal)
    print(f"\nflags: {flags}" if flags else "\nno topic fits any role")
    return 0
