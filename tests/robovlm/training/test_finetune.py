"""Fine-tuning modes (config ``train_setup``): frozen parts get no gradient and stay bitwise equal, LoRA trains a
small fraction and its checkpoint loads like any other, gradient checkpointing computes the same gradients."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from robovlm.configs.model import ConfigError
from robovlm.model.lora import has_lora
from robovlm.model.policy import RoboVLM
from robovlm.training.finetune import apply_train_setup, backbone_parts, format_parameter_table, parameter_table
from tests.conftest import _node_stats, make_batch, tiny_config

FULL = {"use_hand_rgb": True, "use_state": True}


def _model(kind: str = "kosmos2", **train_setup) -> RoboVLM:
    torch.manual_seed(0)
    model = RoboVLM(tiny_config(kind, train_setup=train_setup, **FULL)).train()
    apply_train_setup(model)
    return model


def _steps(model: RoboVLM, n: int = 3) -> None:
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=1e-2)
    for i in range(n):
        loss = model(make_batch(model.config, seed=i))["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("kind", ["kosmos2", "paligemma"])
@pytest.mark.parametrize("part,flag", [("vision", "freeze_vision"), ("language", "freeze_language")])
def test_frozen_parts_get_no_gradient_and_stay_bitwise_equal(kind, part, flag):
    model = _model(kind, **{flag: True})
    frozen, other = backbone_parts(model)[part], backbone_parts(model)["language" if part == "vision" else "vision"]
    before, before_other = _snapshot(frozen), _snapshot(other)
    _steps(model)
    assert all(p.grad is None for p in frozen.parameters())
    after = frozen.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert any(not torch.equal(before_other[k], v) for k, v in other.state_dict().items()), "the rest must train"


def test_lora_trains_far_fewer_parameters_and_keeps_the_base():
    full = sum(p.numel() for p in _model().trainable_parameters())
    model = _model(lora={"r": 2, "alpha": 4, "dropout": 0.0}, freeze_vision=True)
    lm = backbone_parts(model)["language"]
    lm_trainable = sum(p.numel() for p in lm.parameters() if p.requires_grad)
    lm_total = sum(p.numel() for n, p in lm.named_parameters() if ".lora_" not in n)
    assert has_lora(model) and 0 < lm_trainable < 0.2 * lm_total
    assert sum(p.numel() for p in model.trainable_parameters()) < full
    base = {k: v.clone() for k, v in lm.state_dict().items() if ".lora_" not in k}
    _steps(model)
    assert all(torch.equal(base[k], lm.state_dict()[k]) for k in base), "LoRA must not touch the base weights"
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in lm.named_parameters() if "lora_B" in n)
    table = format_parameter_table(model)
    assert "backbone.language" in table and "trainable" in table
    rows = {name: (total, trainable) for name, total, trainable in parameter_table(model)}
    assert rows["backbone.vision"][1] == 0 and rows["head"][1] == rows["head"][0]


def test_a_lora_checkpoint_is_merged_and_loads_like_any_other(tmp_path):
    from robovlm.runtime.torch_engine import TorchEngine

    model = _model(lora={"r": 2, "alpha": 4, "dropout": 0.0, "vision": True})
    _steps(model)
    model.eval()
    model.stats = _node_stats()
    batch = make_batch(model.config, seed=9)
    with torch.no_grad():
        want = model(batch)["actions"]
    model.save_pretrained(tmp_path / "ck")
    keys = load_file(str(tmp_path / "ck" / "model.safetensors")).keys()
    assert not any("lora_" in k or "base_layer" in k for k in keys)
    loaded = RoboVLM.from_pretrained(tmp_path / "ck")
    assert not has_lora(loaded)
    with torch.no_grad():
        got = loaded(batch)["actions"]
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()
    assert json.loads((tmp_path / "ck" / "config.json").read_text())["model"]["train_setup"]["lora"]["r"] == 2
    TorchEngine(tmp_path / "ck")  # the engine loads it too (no peft at inference)


def test_gradient_checkpointing_gives_the_same_gradients(float64):
    grads = []
    for on in (False, True):
        model = _model(gradient_checkpointing=on)
        assert model.backbone.model.is_activation_checkpointing == on
        for m in model.modules():  # dropout off, so both passes draw nothing random
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
        loss = model(make_batch(model.config, seed=1, dtype=torch.float64))["loss"]
        loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    assert all(torch.allclose(grads[0][k], grads[1][k], atol=1e-10) for k in grads[0])


@pytest.mark.parametrize("kind", ["kosmos2", "paligemma"])
def test_frozen_weights_held_in_bf16_train_the_adapters(kind, tmp_path):
    model = _model(kind, lora={"r": 2, "alpha": 4, "dropout": 0.0}, freeze_vision=True, frozen_dtype="bfloat16")
    parts = backbone_parts(model)
    frozen = [p for part in parts.values() for p in part.parameters() if not p.requires_grad]
    assert frozen and all(p.dtype == torch.float32 for p in model.trainable_parameters())
    assert all(p.dtype == torch.float32 for p in frozen if p.dim() < 2), "norms and biases stay fp32"
    frozen_bytes = sum(p.numel() * p.element_size() for p in frozen)
    assert frozen_bytes < 0.56 * sum(p.numel() * 4 for p in frozen), "the held matrices are nearly all the bytes"
    assert all(p.dtype == torch.float32 for p in model.trainable_parameters())
    lm = parts["language"]
    base = {k: v.clone() for k, v in lm.state_dict().items() if ".lora_" not in k}
    _steps(model)  # held weights cast to fp32 at use; everything computes in fp32
    assert all(torch.equal(base[k], lm.state_dict()[k]) for k in base), "the bf16 base must not move"
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in lm.named_parameters() if "lora_B" in n)
    model.eval()
    model.stats = _node_stats()
    model.save_pretrained(tmp_path / "ck")
    saved = load_file(str(tmp_path / "ck" / "model.safetensors"))
    merged = [k for k in saved if k.startswith("backbone.") and k.endswith("q_proj.weight") and "vision" not in k]
    assert merged and all(saved[k].dtype == torch.float32 for k in merged), "the merge keeps the adapters' precision"
    batch = make_batch(model.config, seed=9)
    with torch.no_grad():
        want = model(batch)["actions"]
    loaded = RoboVLM.from_pretrained(tmp_path / "ck")
    with torch.no_grad():
        got = loaded(batch)["actions"]
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()  # the same bf16-rounded weights


def test_train_setup_is_validated_and_lora_targets_must_match():
    with pytest.raises(ConfigError, match="train_setup.lora.r"):
        tiny_config(train_setup={"lora": {"r": 0}})
    with pytest.raises(ConfigError, match="unknown key 'train_setup.freeze_vison'"):
        tiny_config(train_setup={"freeze_vison": True})
    with pytest.raises(ConfigError, match="train_setup.frozen_dtype: must be float32 or bfloat16"):
        tiny_config(train_setup={"lora": {"r": 2}, "frozen_dtype": "float16"})
    with pytest.raises(ConfigError, match="nothing is frozen"):
        tiny_config(train_setup={"frozen_dtype": "bfloat16"})
    with pytest.raises(ValueError, match="match no layer"):
        _model(lora={"target_modules": ["no_such_proj"]})


@pytest.mark.slow
def test_lora_training_run_saves_merged_and_resumes_exactly(tmp_path):
    from robovlm.sim.collect import collect
    from robovlm.training.trainer import STATE_FILE, TrainSettings, train

    collect(tmp_path / "data", episodes_per_scenario=2, image_size=56, noise=0.05)
    cfg = json.loads(open("models/configs/demo.json").read())
    cfg["train_setup"] = {  # the full-size recipe's setup: frozen weights held in bf16
        "freeze_vision": True,
        "lora": {"r": 2, "alpha": 4},
        "gradient_checkpointing": True,
        "frozen_dtype": "bfloat16",
    }
    (tmp_path / "lora.json").write_text(json.dumps(cfg))
    settings = dict(batch_size=4, warmup_steps=1, val_fraction=0.5)
    train(
        tmp_path / "lora.json",
        tmp_path / "data",
        tmp_path / "ck",
        TrainSettings(steps=4, eval_every=4, **settings),
        device="cpu",
    )
    from safetensors.torch import load_file as load_weights

    from robovlm.training.trainer import STATE_DIR

    exact = load_weights(str(tmp_path / "ck" / STATE_DIR / "model.safetensors"))  # unmerged, for resuming
    assert any(".lora_A." in k for k in exact) and any(".base_layer." in k for k in exact)
    assert all(v.dtype == torch.bfloat16 for k, v in exact.items() if k.endswith(".base_layer.weight"))
    merged = RoboVLM.from_pretrained(tmp_path / "ck")  # no peft needed to load
    assert not has_lora(merged)
    m = train(
        tmp_path / "lora.json",
        tmp_path / "data",
        tmp_path / "ck",
        TrainSettings(steps=6, eval_every=6, **settings),
        resume=True,
        device="cpu",
    )
    assert m["steps"] == 6 and len(json.loads((tmp_path / "ck" / STATE_FILE).read_text())["history"]) == 6
    from robovlm.utils.hub import read_model_card

    card = read_model_card(tmp_path / "ck")
    assert "lora" in card["tags"] and card["datasets"] == ["data"]
    assert {m["name"] for m in card["model-index"][0]["results"][0]["metrics"]} == {
        "validation MAE linear.x",
        "validation MAE linear.y",
    }
