import json

import numpy as np
import pytest
import torch

from robovlm.cli import main
from robovlm.configs.model import load_config
from robovlm.data.bag import read_bag_episode
from robovlm.data.bag_writer import episode_to_bag
from robovlm.data.dataset import WindowDataset, compute_stats, cosine_with_warmup, load_episodes, split_episodes
from robovlm.data.errors import EpisodeError
from robovlm.data.hdf5 import read_hdf5_episode
from robovlm.data.instructions import load_instructions
from robovlm.model.policy import RoboVLM
from robovlm.sim.collect import collect
from robovlm.training.trainer import TrainSettings, train

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sim_data(tmp_path_factory):
    d = tmp_path_factory.mktemp("sim")
    r = collect(d, episodes_per_scenario=2, image_size=56, noise=0.05)
    assert r.episodes == 16 and r.failures == 0
    return d


def test_sim_episodes_in_the_users_format_and_windows(sim_data):
    eps = load_episodes(sim_data)
    assert len(eps) == 16 and all(ep.instruction and ep.hand_images is not None for ep in eps)
    train_eps, val_eps = split_episodes(eps, 0.5)
    assert len(val_eps) == 8 and {e.scenario for e in val_eps} == {e.scenario for e in eps}
    cfg = load_config("models/configs/demo.json")
    stats = compute_stats(train_eps, action_fields=["linear.x", "linear.y"], joint_names=None, state_dim=2)
    assert stats.joint_names == ["arm_pan", "arm_lift"] and stats.action_dt == pytest.approx(0.1)
    ds = WindowDataset(train_eps, cfg, stats)
    item = ds[len(ds) - 1]  # the last window of an episode: the chunk runs past the end
    assert item["head_images"].shape == (cfg.window_size, 3, 56, 56) and item["states"].shape == (cfg.window_size, 2)
    assert item["actions"].shape == (cfg.window_size, cfg.fwd_pred_next_n, 2)
    assert not item["action_mask"][-1, -1] and item["action_mask"][0, 0]
    assert item["actions"].abs().max() <= 1.0


def test_bag_episode_reader_aligns_by_stamp(sim_data, tmp_path):
    ep = read_hdf5_episode(sorted(sim_data.glob("*.h5"))[0], load_instructions())
    episode_to_bag(ep, tmp_path / "bag")
    back = read_bag_episode(tmp_path / "bag", instructions=load_instructions())
    np.testing.assert_array_equal(back.images, ep.images)
    np.testing.assert_allclose(back.actions, ep.actions, atol=1e-6)
    np.testing.assert_allclose(back.joint_positions, ep.joint_positions, atol=1e-6)
    assert back.instruction == ep.instruction and back.frame_dt == pytest.approx(ep.frame_dt)


def test_the_same_seed_gives_the_same_run_and_another_seed_another(sim_data, tmp_path):
    # a quarter of the episodes held out: evaluating them is most of these runs' time (issue 34), and the point is
    # the training curve, which any held-out set leaves alone
    def losses(seed: int, out: str) -> list[float]:
        settings = TrainSettings(steps=6, batch_size=8, warmup_steps=2, eval_every=6, val_fraction=0.25, seed=seed)
        train("models/configs/demo.json", sim_data, tmp_path / out, settings, device="cpu")
        return [h["loss"] for h in json.loads((tmp_path / out / "train_progress.json").read_text())["history"]]

    first = losses(0, "a")
    assert losses(0, "b") == first, "same seed, same data: the same loss curve, bit for bit"
    assert losses(1, "c") != first
    settings = TrainSettings(steps=6, batch_size=8, warmup_steps=2, eval_every=2, val_fraction=0.25, seed=0)
    train("models/configs/demo.json", sim_data, tmp_path / "d", settings, device="cpu")
    history = json.loads((tmp_path / "d" / "train_progress.json").read_text())["history"]
    assert [h["loss"] for h in history] == first, "how often the run evaluates must not change it"


def test_short_training_run_loss_falls_and_resumes_and_fine_tunes(sim_data, tmp_path, capsys):
    settings = TrainSettings(steps=40, batch_size=8, lr=2e-3, warmup_steps=5, eval_every=40, val_fraction=0.5)
    m = train("models/configs/demo.json", sim_data, tmp_path / "ck", settings, device="cpu")
    hist = json.loads((tmp_path / "ck" / "train_progress.json").read_text())["history"]
    first = np.mean([h["loss"] for h in hist[:5]])
    last = np.mean([h["loss"] for h in hist[-5:]])
    assert last < 0.8 * first, (first, last)
    assert set(m["final_val_mae"]) == {"linear.x", "linear.y"}
    assert (tmp_path / "ck" / "loss_curve.png").stat().st_size > 1000
    assert json.loads((tmp_path / "ck" / "metrics.json").read_text())["steps"] == 40
    model = RoboVLM.from_pretrained(tmp_path / "ck")
    assert model.stats.action_fields == ["linear.x", "linear.y"]
    m2 = train(
        "models/configs/demo.json",
        sim_data,
        tmp_path / "ck",
        TrainSettings(steps=50, batch_size=8, warmup_steps=5, eval_every=50, val_fraction=0.5),
        resume=True,
        device="cpu",
    )
    assert m2["steps"] == 50
    assert len(json.loads((tmp_path / "ck" / "train_progress.json").read_text())["history"]) == 50
    # A crafted progress file in the output directory (the old pickle name) must not run code on --resume.
    marker = tmp_path / "pwned"
    (tmp_path / "ck" / "train_progress.json").unlink()
    torch.save(_Payload(str(marker)), tmp_path / "ck" / "train_state.pt")
    assert (
        main(
            [
                "train",
                "models/configs/demo.json",
                "--data",
                str(sim_data),
                "--out",
                str(tmp_path / "ck"),
                "--steps",
                "60",
                "--resume",
            ]
        )
        == 2
    )
    assert not marker.exists(), "--resume executed code from train_state.pt"

    # fine-tuning (the flywheel's rounds) starts from the checkpoint's weights and normalization, on a fresh schedule
    tuned = tmp_path / "ft"
    ft_settings = TrainSettings(steps=5, batch_size=8, warmup_steps=2, eval_every=5, val_fraction=0.25, seed=3)
    train(tmp_path / "ck", sim_data, tuned, ft_settings, init_from=tmp_path / "ck", device="cpu")
    ft_hist = json.loads((tuned / "train_progress.json").read_text())["history"]
    assert len(ft_hist) == 5 and np.mean([h["loss"] for h in ft_hist]) < 0.8 * first, (first, ft_hist)
    assert RoboVLM.from_pretrained(tuned).stats == model.stats  # not recomputed from its other training split
    argv = ["train", "models/configs/single_camera.json", "--data", str(sim_data), "--out", str(tmp_path / "x")]
    assert main([*argv, "--init-from", str(tmp_path / "ck"), "--steps", "2"]) == 2
    said = capsys.readouterr().err
    assert "differs from" in said and "use_hand_rgb" in said and not (tmp_path / "x").exists(), said


class _Payload:
    """A pickle that runs a command when loaded without weights_only (what the probe put in train_state.pt)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.path}",)


def test_lr_schedule_and_bad_data_dir(tmp_path):
    assert cosine_with_warmup(0, warmup=10, total=100) == pytest.approx(0.1)
    assert cosine_with_warmup(10, warmup=10, total=100) == pytest.approx(1.0)
    assert cosine_with_warmup(100, warmup=10, total=100) == pytest.approx(0.05)
    with pytest.raises(EpisodeError, match="no episodes"):
        load_episodes(tmp_path)
    assert (
        main(
            ["train", "models/configs/demo.json", "--data", str(tmp_path), "--out", str(tmp_path / "o"), "--steps", "1"]
        )
        == 2
    )
    assert not (tmp_path / "o").exists(), "bad data must leave no empty output directory"
