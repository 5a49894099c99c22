"""``robovlm collect-sim``: scripted-expert episodes from the simulator, in the user's HDF5 format or as a
LeRobotDataset v3.0 (``--format lerobot``)."""

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
    s.add_argument(
        "--format", choices=["hdf5", "lerobot"], default="hdf5", help="lerobot: one LeRobotDataset v3.0 directory"
    )
    s.add_argument("--video-codec", choices=["av1", "h264"], default="av1", help="--format lerobot: camera video codec")
    s.set_defaults(func=cmd_collect_sim)


def cmd_collect_sim(args: argparse.Namespace) -> int:
    import shutil
    import tempfile
    from pathlib import Path

    from ..sim.collect import collect

    out = Path(args.out)
    if args.format == "lerobot":
        out.parent.mkdir(parents=True, exist_ok=True)
        hdf5_dir = Path(tempfile.mkdtemp(prefix=f".{out.name}.h5.", dir=out.parent))
    r = collect(
        hdf5_dir if args.format == "lerobot" else out,
        episodes_per_scenario=args.episodes_per_scenario,
        seed_offset=args.seed_offset,
        image_size=args.image_size,
        noise=args.noise,
        bags=args.bags,
        perturb=args.perturb,
    )
    if args.format == "lerobot":
        from ..data.dataset import load_episodes
        from ..data.lerobot_writer import WrittenEpisode, fps_of, write_dataset

        try:
            eps = load_episodes(hdf5_dir, use_state=True, state_dim=2, lazy=True)
            items = (WrittenEpisode(e, e.instruction or "") for e in eps)
            write_dataset(items, out, fps=fps_of(eps[0]), codec=args.video_codec, robot_type="robovlm_sim")
        finally:
            shutil.rmtree(hdf5_dir, ignore_errors=True)
    print(
        f"wrote {r.episodes} expert episodes ({r.frames} frames) to {args.out}"
        f"{' (LeRobotDataset v3.0)' if args.format == 'lerobot' else ''}; expert failures skipped: {r.failures}"
    )
    return 0
