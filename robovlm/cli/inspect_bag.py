"""``robovlm inspect-bag``: topics, types, counts and rates of a rosbag2, a proposed role mapping, and the episodes
``train`` would cut from it with their instructions and where each instruction comes from; for the node's rollout
recordings, the outcome, every intervention, and the segments each ``--rollouts`` mode trains on."""

from __future__ import annotations

import argparse

from .common import TOPIC_HELP, add_recording_options, instruction_sources, split_sources


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``inspect-bag`` to the ``robovlm`` command line."""
    s = sub.add_parser(
        "inspect-bag",
        help="topics, types, counts and rates of a rosbag2, a proposed role mapping, and its episodes with their "
        "instructions",
    )
    s.add_argument("bag", metavar="BAG")
    s.add_argument("--topic", action="append", metavar="ROLE=TOPIC", help=TOPIC_HELP)
    add_recording_options(s)
    s.set_defaults(func=cmd_inspect_bag)


def cmd_inspect_bag(args: argparse.Namespace) -> int:
    from ..data.bag import BagError, bag_topics, read_recording
    from ..data.recording import episodes_of, marker_topic
    from ..data.roles import ROLES, TopicMap, propose_mapping

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

    topics = TopicMap.from_flags(args.topic)
    sources, split = instruction_sources(args), split_sources(args)
    try:  # the episodes as ``train`` cuts them (with the joint state and hand camera where the bag has them)
        whole, timeline = read_recording(
            args.bag,
            topics,
            image_size=8,
            use_joints=topics["joint_states"] in info,
            use_hand=topics["hand"] in info,
            marker_topic=marker_topic(split),
        )
    except BagError as exc:
        print(f"\nno episodes: {exc}")
        return 0
    found = episodes_of(whole, timeline, split, sources)
    how = ", ".join(str(s) for s in split) if split else "one episode per bag (no --split-episodes)"
    print(f"\nepisodes ({how}): {len(found)}; {getattr(whole.alignment, 'format', str)()}")
    assert whole.frame_times_ns is not None
    t0 = timeline.start_ns
    name_w = max(len(ep.name) for ep, _ in found)
    print(f"  {'episode':<{name_w}}  {'frames':>6} {'seconds':>8}  {'from-to (s)':<15} {'cut by':<22} instruction")
    for ep, cut in found:
        assert ep.frame_times_ns is not None
        start, end = (ep.frame_times_ns[0] - t0) * 1e-9, (ep.frame_times_ns[-1] - t0) * 1e-9
        text = f"{ep.instruction!r} ({ep.instruction_source})" if ep.instruction else "NONE: train would stop"
        print(
            f"  {ep.name:<{name_w}}  {len(ep):>6} {len(ep) * ep.frame_dt:>8.1f}  {f'{start:.1f}-{end:.1f}':<15} "
            f"{cut.how:<22} {text}"
        )
    if timeline.rollout is not None:
        _rollout(whole, timeline.rollout, t0)
    return 0


def _rollout(whole, rollout, t0: int) -> None:
    """What a node's rollout recording says: mode, outcome, interventions, and what training takes from it."""
    from ..data.rollout import ROLLOUT_MODES, operator_frames, runs, teaching_frames

    outcome = "not given" if rollout.outcome is None else ": ".join(x for x in rollout.outcome if x)
    print(f"\nrollout recording ({rollout.mode} mode, model {rollout.info.get('model', '?')}): outcome {outcome}")
    spans = rollout.spans(int(whole.frame_times_ns[-1]))
    if rollout.mode == "shadow":
        print("  shadow mode: the operator drove throughout; every frame is a demonstration")
    else:
        print(f"  interventions: {len(spans)}")
        for k, (lo, hi) in enumerate(spans):
            print(f"    {k}: {(lo - t0) * 1e-9:.1f}-{(min(hi, int(whole.frame_times_ns[-1])) - t0) * 1e-9:.1f} s")
    operator = int(operator_frames(whole, rollout).sum())
    print(f"  frames: {len(whole)}, of them commanded by the operator: {operator}")
    for mode in ROLLOUT_MODES:
        segments = runs(teaching_frames(whole, rollout, mode))
        frames = sum(b - a for a, b in segments)
        print(f"  --rollouts {mode:<13} {len(segments)} segment(s), {frames} frames")
