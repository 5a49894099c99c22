"""``robovlm inspect-dataset``: a LeRobotDataset v3.0 directory's features, the role mapping proposed for them (as
``inspect-bag`` proposes one for a bag's topics), the action columns taken per Twist field, and its episodes with
their tasks and the instruction training would use."""

from __future__ import annotations

import argparse

from .common import add_dataset_options, add_recording_options, instruction_sources


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``inspect-dataset`` to the ``robovlm`` command line."""
    s = sub.add_parser(
        "inspect-dataset",
        help="features, proposed role mapping and episodes of a LeRobotDataset v3.0 directory",
    )
    s.add_argument("dataset", metavar="DIR")
    add_dataset_options(s)
    add_recording_options(s, split=False)
    s.set_defaults(func=cmd_inspect_dataset)


def cmd_inspect_dataset(args: argparse.Namespace) -> int:
    from ..data.instructions import EpisodeTexts
    from ..data.lerobot import ROLES, FeatureMap, open_dataset, propose_features

    ds = open_dataset(args.dataset)
    info = ds.info
    print(
        f"{args.dataset}: LeRobotDataset {info['codebase_version']}, {len(ds.episodes)} episodes, "
        f"{info.get('total_frames', '?')} frames at {ds.fps} fps, robot {info.get('robot_type') or 'not named'}"
    )
    width = max(len(k) for k in ds.features)
    print(f"  {'feature':<{width}}  {'dtype':<8} {'shape':<14} names")
    for key, f in ds.features.items():
        names = f.get("names")
        print(
            f"  {key:<{width}}  {f.get('dtype', '?'):<8} {str(tuple(f.get('shape', ()))):<14} {names if names else ''}"
        )
    proposal = propose_features(ds)
    print("\nproposed mapping (roles the dataset lacks are left out):")
    for role in ROLES:
        print(f"  {role:<7} {proposal.get(role, '(none)')}")
    fmap = FeatureMap.build(ds, args.feature, args.action_names)
    action_names = ds.features[fmap.keys["action"]].get("names") or []
    print("\naction columns per Twist field (--action-names FIELD=NAME):")
    for twist in ("linear.x", "linear.y", "angular.z"):
        col = fmap.action_columns.get(twist)
        shown = f"{action_names[col]} (column {col})" if col is not None and col < len(action_names) else "(none)"
        print(f"  {twist:<10} {shown}")
    flags = " ".join(f"--feature {r}={proposal[r]}" for r in ROLES if r in proposal)
    print(f"\nflags: {flags}" if flags else "\nno feature fits any role")
    sources = instruction_sources(args)
    print(f"\nepisodes: {len(ds.episodes)}")
    print(f"  {'episode':>7} {'frames':>7} {'seconds':>8}  instruction")
    for ep in ds.episodes:
        tasks = [str(t) for t in ep.get("tasks") or []]
        texts = EpisodeTexts(
            episode=f"{ds.root.name}#{ep['episode_index']}",
            recording=ds.root.name,
            scenario=None,
            topic=tasks[0] if tasks else None,
            topic_name="meta/tasks.parquet",
        )
        found = sources.find(texts)
        text = f"{found.text!r} ({found.source})" if found else "NONE: train would stop"
        print(f"  {ep['episode_index']:>7} {ep['length']:>7} {ep['length'] / ds.fps:>8.1f}  {text}")
    return 0
