"""Episodes indexed at start and read on demand: the same windows as loading everything, from HDF5 files and from
rosbag2 recordings (through the frame cache), in DataLoader workers, with statistics from one streaming pass."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from robovlm.configs.model import load_config
from robovlm.data.augment import ImageAugment
from robovlm.data.bag_writer import episode_to_bag
from robovlm.data.dataset import WindowDataset, collate, compute_stats, load_episodes
from robovlm.data.hdf5 import LazyFrames, read_hdf5_episode
from robovlm.data.instructions import load_instructions
from tests import ROOT


@pytest.fixture(scope="module")
def episodes_dir(tmp_path_factory):
    from robovlm.sim.collect import collect

    d = tmp_path_factory.mktemp("lazy")
    collect(d / "h5", episodes_per_scenario=1, image_size=56, noise=0.05)
    (d / "bags").mkdir()
    for p in sorted((d / "h5").glob("*.h5"))[:2]:
        episode_to_bag(read_hdf5_episode(p, load_instructions()), d / "bags" / p.stem)
    return d


def test_lazy_hdf5_windows_equal_eager(episodes_dir):
    eager = load_episodes(episodes_dir / "h5")
    lazy = load_episodes(episodes_dir / "h5", lazy=True)
    assert isinstance(lazy[0].images, LazyFrames) and isinstance(lazy[0].hand_images, LazyFrames)
    cfg = load_config(ROOT / "models" / "configs" / "demo.json")
    stats = compute_stats(eager, action_fields=["linear.x", "linear.y"], joint_names=None, state_dim=2)
    a, b = WindowDataset(eager, cfg, stats), WindowDataset(lazy, cfg, stats)
    for i in (0, len(a) // 2, len(a) - 1):
        x, y = a[i], b[i]
        assert all(torch.equal(x[k], y[k]) for k in x if k != "instructions")
    with pytest.raises(IndexError):
        lazy[0].images[len(lazy[0].images)]
    assert np.array_equal(lazy[0].images[-1], eager[0].images[-1])


def test_lazy_windows_in_dataloader_workers(episodes_dir):
    lazy = load_episodes(episodes_dir / "h5", lazy=True)
    cfg = load_config(ROOT / "models" / "configs" / "demo.json")
    stats = compute_stats(lazy, action_fields=["linear.x", "linear.y"], joint_names=None, state_dim=2)
    ds = WindowDataset(lazy, cfg, stats, augment=ImageAugment(shift=3), seed=7)
    inline = next(iter(DataLoader(ds, batch_size=4, collate_fn=collate)))
    workers = next(iter(DataLoader(ds, batch_size=4, collate_fn=collate, num_workers=2)))
    assert torch.equal(inline["head_images"], workers["head_images"])  # shifts drawn per (seed, epoch, window)


def test_bags_are_decoded_once_into_the_frame_cache(episodes_dir, tmp_path, monkeypatch):
    import robovlm.data.dataset as dataset

    cache = tmp_path / "cache"
    eager = load_episodes(episodes_dir / "bags", image_size=56)
    lazy = load_episodes(episodes_dir / "bags", image_size=56, lazy=True, cache_dir=cache)
    assert isinstance(lazy[0].images, np.memmap) and len(list(cache.iterdir())) == 2
    for e, lz in zip(eager, lazy):
        assert np.array_equal(e.images, lz.images) and np.array_equal(e.actions, lz.actions)
        assert lz.instruction == e.instruction and lz.frame_dt == pytest.approx(e.frame_dt)

    def no_decoding(*args, **kwargs):
        raise AssertionError("a cached bag was decoded again")

    monkeypatch.setattr(dataset, "read_recording", no_decoding)
    again = load_episodes(episodes_dir / "bags", image_size=56, lazy=True, cache_dir=cache)
    assert np.array_equal(again[1].images, lazy[1].images)
    with pytest.raises(AssertionError, match="decoded again"):  # another image size is another entry
        load_episodes(episodes_dir / "bags", image_size=28, lazy=True, cache_dir=cache)


def test_streaming_stats_equal_the_whole_data_computation(episodes_dir):
    eps = load_episodes(episodes_dir / "h5", lazy=True)
    stats = compute_stats(eps, action_fields=["linear.x", "linear.y", "angular.z"], joint_names=None, state_dim=2)
    joints = np.concatenate([e.joint_positions for e in eps]).astype(np.float64)
    assert np.allclose(stats.state_mean, joints.mean(0), atol=1e-9)
    assert np.allclose(stats.state_std, np.maximum(joints.std(0), 0.05), atol=1e-9)
    acts = np.concatenate([e.actions for e in eps])
    span = np.maximum(acts.max(0) - acts.min(0), 0.05)
    assert np.allclose(stats.action_low, acts.min(0) - 0.05 * span)
