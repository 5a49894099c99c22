"""Recordings -> the teleoperation HDF5 format, once: role mapping, alignment, joint selection, episode splitting and
instructions applied, so a team converts a day of bags once and trains many times (``robovlm convert-bags``).

Each episode becomes ``<out>/<episode>.h5`` (``BAG.h5``, or ``BAG#k.h5`` when cut from a long recording) with its
instruction in the file's ``instruction`` attribute and its origin in ``source_bag``, ``start_s`` and ``end_s``
(seconds from the bag's first message); ``manifest.json`` lists every episode and, per bag, the frames the
alignment dropped and the frames left between episodes. Training reads the files back to the same windows as it
reads the bags (images are stored at ``image_size``, the size training resizes bags to).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from .bag import bag_topics, read_recording
from .dataset import episode_paths, select_joints
from .errors import EpisodeError
from .hdf5 import Episode, write_hdf5_episode
from .instructions import InstructionSources
from .recording import SplitSource, Timeline, episodes_of, marker_topic
from .roles import TopicMap

log = logging.getLogger(__name__)


def convert_bags_to_lerobot(
    src: str | Path,
    out: str | Path,
    *,
    fps: int | None = None,
    codec: str = "av1",
    topics: TopicMap | None = None,
    joint_names: list[str] | None = None,
    image_size: int | None = None,
    split: list[SplitSource] | None = None,
    instructions: InstructionSources | None = None,
) -> Path:
    """Every episode of the rosbag2 directories and HDF5 episodes in ``src`` as one LeRobotDataset v3.0
    (``robovlm.data.lerobot_writer``) at ``fps`` (default: the first episode's frame rate, rounded; an HDF5 episode
    keeps its own frames, so it must be at that rate); a node's rollout recordings keep who commanded each frame and
    their outcome. Episodes are read one at a time."""
    from .hdf5 import read_hdf5_episode
    from .lerobot_writer import WrittenEpisode, write_dataset

    topics = topics or TopicMap()
    sources = instructions or InstructionSources()
    paths = episode_paths(src)
    if not paths:
        raise EpisodeError(f"{src}: no rosbag2 directories or HDF5 episodes to convert")

    def items():
        for path in tqdm(paths, desc="converting", unit="recording", disable=None):
            if path.suffix == ".h5":
                ep = read_hdf5_episode(path, sources, lazy=True)
                if image_size is not None and tuple(ep.images.shape[1:3]) != (image_size, image_size):
                    raise EpisodeError(
                        f"{path}: frames are {ep.images.shape[2]}x{ep.images.shape[1]}; an HDF5 episode is written "
                        "at the size it was recorded, drop --image-size"
                    )
                if joint_names is not None:
                    ep = select_joints(ep, joint_names)
                found = [ep]
                rollout = None
            else:
                whole, timeline = _read_bag(path, topics, joint_names, image_size, split or [])
                found = [ep for ep, _ in episodes_of(whole, timeline, split or [], sources)]
                rollout = timeline.rollout
            for ep in found:
                if not ep.instruction:
                    assert ep.texts is not None
                    sources.resolve(ep.texts)  # raises, naming every source tried
                yield WrittenEpisode(ep, ep.instruction or "", rollout)

    stream = items()
    first = next(stream)

    def chained():
        yield first
        yield from stream

    chosen = fps if fps is not None else max(1, int(round(1.0 / first.episode.frame_dt)))
    return write_dataset(chained(), out, fps=chosen, codec=codec)


def convert_bags(
    src: str | Path,
    out: str | Path,
    *,
    topics: TopicMap | None = None,
    joint_names: list[str] | None = None,
    image_size: int | None = None,
    split: list[SplitSource] | None = None,
    instructions: InstructionSources | None = None,
) -> dict[str, Any]:
    """Convert every rosbag2 directory in ``src`` (or ``src`` itself) into HDF5 episodes in ``out``; returns the
    manifest (also written to ``out/manifest.json``). ``out`` appears only when every episode is written: an episode
    without an instruction (the error names every source tried) or any other failure leaves nothing behind."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise EpisodeError(f"{out} exists and is not an empty directory; convert into a new directory")
    topics = topics or TopicMap()
    instructions = instructions or InstructionSources()
    bags = [p for p in episode_paths(src) if p.suffix != ".h5"]
    if not bags:
        raise EpisodeError(f"{src}: no rosbag2 directories to convert")
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))  # renamed to ``out`` when all is written
    try:
        manifest: dict[str, Any] = {"episodes": [], "bags": []}
        for bag in tqdm(bags, desc="converting", unit="bag", disable=None):
            _convert_one(bag, work, manifest, topics, joint_names, image_size, split or [], instructions)
        (work / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        if out.exists():
            out.rmdir()
        work.rename(out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return manifest


def _convert_one(
    bag: Path,
    work: Path,
    manifest: dict[str, Any],
    topics: TopicMap,
    joint_names: list[str] | None,
    image_size: int | None,
    split: list[SplitSource],
    instructions: InstructionSources,
) -> None:
    """One bag's episodes into ``work``, with their manifest entries (the bag is read once and held in memory)."""
    whole, timeline = _read_bag(bag, topics, joint_names, image_size, split)
    found = episodes_of(whole, timeline, split, instructions)
    align = whole.alignment
    manifest["bags"].append(
        {
            "bag": str(bag),
            "head_frames": getattr(align, "head_frames", len(whole)),
            "dropped_before_start": getattr(align, "dropped_before_start", 0),
            "dropped_stale": getattr(align, "dropped_stale", 0),
            "frames_between_episodes": len(whole) - sum(len(ep) for ep, _ in found),
            "episodes": len(found),
        }
    )
    for ep, cut in found:
        if not ep.instruction:
            assert ep.texts is not None
            instructions.resolve(ep.texts)  # raises, naming every source tried
        assert ep.frame_times_ns is not None and ep.instruction
        start_s = float((ep.frame_times_ns[0] - timeline.start_ns) * 1e-9)
        end_s = float((ep.frame_times_ns[-1] - timeline.start_ns) * 1e-9)
        path = work / f"{ep.name}.h5"
        write_hdf5_episode(
            path,
            images_rgb=np.asarray(ep.images),
            actions=ep.actions,
            event_types=ep.event_types,
            episode_name=ep.name,
            frame_dt=ep.frame_dt,
            joint_positions=ep.joint_positions,
            joint_names=ep.joint_names,
            hand_images_rgb=None if ep.hand_images is None else np.asarray(ep.hand_images),
            attrs={"instruction": ep.instruction, "source_bag": str(bag), "start_s": start_s, "end_s": end_s},
        )
        manifest["episodes"].append(
            {
                "file": path.name,
                "episode": ep.name,
                "source_bag": str(bag),
                "start_s": round(start_s, 3),
                "end_s": round(end_s, 3),
                "frames": len(ep),
                "cut_by": cut.how,
                "instruction": ep.instruction,
                "instruction_source": ep.instruction_source,
            }
        )


def _read_bag(
    bag: Path, topics: TopicMap, joint_names: list[str] | None, image_size: int | None, split: list[SplitSource]
) -> tuple[Episode, Timeline]:
    """A whole bag with the joint states and the hand camera where it has them."""
    present = bag_topics(bag)
    return read_recording(
        bag,
        topics,
        joint_names=joint_names,
        image_size=image_size,
        use_joints=topics["joint_states"] in present,
        use_hand=topics["hand"] in present,
        marker_topic=marker_topic(split),
    )
