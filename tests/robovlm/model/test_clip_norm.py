import pytest
import torch
from transformers import CLIPTextConfig, CLIPTextModelWithProjection

from robovlm.model.policy import RoboVLM
from tests.conftest import make_batch, tiny_config


@pytest.fixture
def clip_dir(tmp_path):
    cfg = CLIPTextConfig(
        vocab_size=259,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=64,
        projection_dim=8,
        pad_token_id=256,
        bos_token_id=257,
        eos_token_id=258,
    )
    CLIPTextModelWithProjection(cfg).save_pretrained(tmp_path / "clip")
    return str(tmp_path / "clip")


def _model(clip_dir, **kw):
    return RoboVLM(tiny_config(use_clip_norm=True, clip_text={"path": clip_dir, "tokenizer": "bytes"}, **kw))


def test_clip_is_frozen_out_of_the_optimizer_and_bitwise_unchanged_by_training(clip_dir):
    model = _model(clip_dir).train()
    clip_params = model.clip_norm.frozen_parameters()
    before = {n: p.detach().clone() for n, p in model.clip_norm.text_encoder.named_parameters()}
    params = model.trainable_parameters()
    opt = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.1)  # weight decay would move anything it held
    ids = {id(p) for g in opt.param_groups for p in g["params"]}
    assert not ids & {id(p) for p in clip_params}
    assert all(not p.requires_grad for p in clip_params)
    assert not model.clip_norm.text_encoder.training  # eval even when the policy trains
    batch = make_batch(model.config, 2)
    for _ in range(3):
        opt.zero_grad()
        model(batch)["loss"].backward()
        opt.step()
    for n, p in model.clip_norm.text_encoder.named_parameters():
        assert torch.equal(p, before[n]), n
        assert p.grad is None


def test_clip_loss_is_weighted_and_falls_when_overfitting_one_batch(clip_dir):
    model = _model(clip_dir, clip_norm_ratio=0.05).train()
    batch = make_batch(model.config, 2)
    out = model(batch)
    torch.testing.assert_close(out["loss"], out["action_loss"] + 0.05 * out["clip_loss"])
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=3e-3)
    first = None
    for _ in range(40):
        opt.zero_grad()
        out = model(batch)
        first = first if first is not None else out["clip_loss"].item()
        (out["action_loss"] + out["clip_loss"]).backward()
        opt.step()
    assert out["clip_loss"].item() < 0.5 * first


def test_clip_targets_are_normalized_text_embeddings(clip_dir):
    model = _model(clip_dir).eval()
    e = model.clip_norm.text_embedding(["go left", "go right", "go left"])
    torch.testing.assert_close(e.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(e[0], e[2])
    assert not torch.allclose(e[0], e[1])


def test_clip_encoder_is_not_saved_and_not_needed_for_inference(clip_dir, tmp_path):
    model = _model(clip_dir).eval()
    model.save_pretrained(tmp_path / "ckpt")
    from safetensors.torch import load_file

    keys = load_file(str(tmp_path / "ckpt" / "model.safetensors")).keys()
    assert not any(k.startswith("clip_norm.text_encoder.") for k in keys)
    assert any(k.startswith("clip_norm.proj.") for k in keys)
    inference = RoboVLM.from_pretrained(tmp_path / "ckpt")
    assert not hasattr(inference, "clip_norm")
    training = RoboVLM.from_pretrained(tmp_path / "ckpt", load_clip=True)
    torch.testing.assert_close(training.clip_norm.proj[1].weight, model.clip_norm.proj[1].weight)
