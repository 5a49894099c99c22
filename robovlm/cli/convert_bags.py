"""``robovlm convert-bags``: a directory of rosbag2 recordings -> teleoperation HDF5 episodes and a manifest
(``robovlm.data.convert``), or recordings and HDF5 episodes -> one LeRobotDataset v3.0 (``--format lerobot``,
``robovlm.data.lerobot_writer``), to share them with teams that train on LeRobot's format."""

from __future__ import annotations

import argparse

from .common import TOPIC_HELP, add_recording_options, at_least, instruction_sources, split_sources


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``convert-bags`` to the ``robovlm`` command line."""
    s = sub.add_parser(
        "convert-bags",
        help="write the episodes of rosbag2 recordings (roles, alignment, joints, splitting, instructions applied) "
        "as teleoperation HDF5 files with a manifest, to convert once and train many times",
    )
    s.add_argument(
        "src", metavar="DIR", help="a rosbag2 directory, or a directory of them (--format lerobot: HDF5 episodes too)"
    )
    s.add_argument("--out", required=True, help="new directory for the HDF5 episodes and manifest.json")
    s.add_argument("--topic", action="append", metavar="ROLE=TOPIC", help=TOPIC_HELP)
    s.add_argument("--joints", metavar="NAME,NAME", help="joints to keep, by name, in order (default: all)")
    s.add_argument(
        "--image-size",
        type=at_least(8),
        help="store frames at this size (the model's image_size: training then reads them as it reads the bags); "
        "default: as recorded",
    )
    s.add_argument(
        "--format", choices=["hdf5", "lerobot"], default="hdf5", help="lerobot: one LeRobotDataset v3.0 directory"
    )
    s.add_argument("--fps", type=at_least(1), help="--format lerobot: frames per second (default: the recording's)")
    s.add_argument("--video-codec", choices=["av1", "h264"], default="av1", help="--format lerobot: camera video codec")
    add_recording_options(s)
    s.set_defaults(func=cmd_convert_bags)


def cmd_convert_bags(args: argparse.Namespace) -> int:
    from ..data.convert import convert_bags
    from ..data.roles import TopicMap

    joints = [n.strip() for n in (args.joints or "").split(",") if n.strip()] or None
    if args.format == "lerobot":
        from ..data.convert import convert_bags_to_lerobot
        from ..data.lerobot import open_dataset

        path = convert_bags_to_lerobot(
            args.src,
            args.out,
            fps=args.fps,
            codec=args.video_codec,
            topics=TopicMap.from_flags(args.topic),
            joint_names=joints,
            image_size=args.image_size,
            split=split_sources(args),
            instructions=instruction_sources(args),
        )
        ds = open_dataset(path)
        frames = ds.info["total_frames"]
        print(f"wrote LeRobotDataset {path}: {len(ds.episodes)} episodes, {frames} frames at {ds.fps} fps")
        return 0
    manifest = convert_bags(
        args.src,
        args.out,
        topics=TopicMap.from_flags(args.topic),
        joint_names=joints,
        image_size=args.image_size,
        split=split_sources(args),
        instructions=instruction_sources(args),
    )
    for bag in manifest["bags"]:
        print(
            f"{bag['bag']}: {bag['episodes']} episode(s); {bag['head_frames']} head frames, "
            f"{bag['dropped_before_start'] + bag['dropped_stale']} dropped by alignment, "
            f"{bag['frames_between_episodes']} between episodes"
        )
    for ep in manifest["episodes"]:
        print(
            f"  {ep['file']}: {ep['frames']} frames, {ep['start_s']:.1f}-{ep['end_s']:.1f} s, "
            f"{ep['instruction']!r} ({ep['instruction_source']})"
        )
    print(f"wrote {len(manifest['episodes'])} episodes and manifest.json to {args.out}")
    return 0
