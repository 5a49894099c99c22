import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import Kosmos2Config, Kosmos2Model, PreTrainedTokenizerFast

from robovlm.configs.model import RoboVLMConfig
from robovlm.model.policy import CheckpointError, RoboVLM
from tests.conftest import KOSMOS_TINY, make_batch, tiny_config


@pytest.fixture
def ckpt(tmp_path):
    model = RoboVLM(tiny_config(use_claw_matrix=True, use_hierarchical=True, use_advanced_attention=True)).eval()
    model.save_pretrained(tmp_path / "ckpt")
    return model, tmp_path / "ckpt"


def test_round_trip_gives_identical_outputs(ckpt):
    model, path = ckpt
    assert sorted(p.name for p in path.iterdir()) == ["README.md", "config.json", "model.safetensors", "stats.json"]
    loaded = RoboVLM.from_pretrained(path)
    batch = make_batch(model.config, 2)
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch)["actions"], model(batch)["actions"], rtol=0, atol=0)
    a = model.step(batch["head_images"][:1, 0], batch["hand_images"][:1, 0], batch["states"][:1, 0], "go")
    b = loaded.step(batch["head_images"][:1, 0], batch["hand_images"][:1, 0], batch["states"][:1, 0], "go")
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert loaded.config == RoboVLMConfig.from_dict(
        {**model.config.to_dict(), "backbone": loaded.config.backbone.__dict__}
    )


@pytest.mark.parametrize("name", ["config.json", "model.safetensors", "stats.json"])
def test_missing_file_is_named(ckpt, name):
    _, path = ckpt
    (path / name).unlink()
    with pytest.raises(CheckpointError, match=f"missing {name}"):
        RoboVLM.from_pretrained(path)


def test_corrupt_files_are_named(ckpt):
    _, path = ckpt
    good = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="model.safetensors is corrupt"):
        RoboVLM.from_pretrained(path)
    (path / "model.safetensors").write_bytes(good)
    (path / "config.json").write_text("{oops")
    with pytest.raises(CheckpointError, match="config.json is not valid JSON"):
        RoboVLM.from_pretrained(path)


def test_weights_that_do_not_match_the_config_are_listed(ckpt):
    _, path = ckpt
    w = load_file(str(path / "model.safetensors"))
    w["extra.weight"] = torch.zeros(1)
    del w["action_token"]
    save_file(w, str(path / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"missing \['action_token'\], unexpected \['extra.weight'\]"):
        RoboVLM.from_pretrained(path)


def test_wrong_tensor_shape_and_bad_stats_are_named(ckpt):
    _, path = ckpt
    w = load_file(str(path / "model.safetensors"))
    w["action_token"] = torch.zeros(3)
    save_file(w, str(path / "model.safetensors"))
    with pytest.raises(CheckpointError, match="shapes do not match"):
        RoboVLM.from_pretrained(path)


def test_stats_are_validated(ckpt):
    _, path = ckpt
    stats = json.loads((path / "stats.json").read_text())
    (path / "stats.json").write_text(
        json.dumps({**stats, "state_mean": [0.0] * 3, "state_std": [1.0] * 3, "joint_names": []})
    )
    with pytest.raises(CheckpointError, match="state_dim 6"):
        RoboVLM.from_pretrained(path)
    (path / "stats.json").write_text(json.dumps({**stats, "state_std": [0.0] * 6}))
    with pytest.raises(CheckpointError, match="state_std must be finite and positive"):
        RoboVLM.from_pretrained(path)
    (path / "stats.json").write_text(json.dumps({**stats, "bogus": 1}))
    with pytest.raises(CheckpointError, match="unexpected keys"):
        RoboVLM.from_pretrained(path)


def test_pretrained_backbone_and_its_tokenizer_travel_with_the_checkpoint(tmp_path):
    Kosmos2Model(Kosmos2Config(**KOSMOS_TINY)).save_pretrained(tmp_path / "bb")
    vocab = {
        "[PAD]": 0,
        "<s>": 1,
        "</s>": 2,
        "[UNK]": 3,
        "go": 4,
        "left": 5,
        "An": 6,
        "image": 7,
        "of": 8,
        "a": 9,
        "robot": 10,
    }
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="[PAD]", unk_token="[UNK]"
    ).save_pretrained(tmp_path / "bb")
    cfg = tiny_config(backbone={"type": "kosmos2", "path": str(tmp_path / "bb"), "tokenizer": "auto"})
    model = RoboVLM(cfg).eval()
    assert model._prompt_ids("go left") == [1, 6, 7, 8, 9, 10, 4, 5]
    model.save_pretrained(tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "tokenizer").is_dir()
    loaded = RoboVLM.from_pretrained(tmp_path / "ckpt")
    assert loaded.config.backbone.tokenizer == "checkpoint"
    batch = make_batch(cfg, 1)
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch)["actions"], model(batch)["actions"], rtol=0, atol=0)
