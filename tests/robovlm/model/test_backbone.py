import pytest
import torch
from transformers import Kosmos2Config, Kosmos2Model

from robovlm.configs.model import BackboneConfig, ConfigError
from robovlm.model.backbone import BackboneError, build_backbone
from tests.conftest import KOSMOS_TINY, PALIGEMMA_TINY


def _at_224(tiny: dict) -> dict:
    cfg = {k: (dict(v) if isinstance(v, dict) else v) for k, v in tiny.items()}
    cfg["vision_config"]["image_size"] = 224
    return cfg


def test_kosmos2_gives_257_patch_tokens_and_64_native_tokens_at_224px():
    cfg = _at_224(KOSMOS_TINY)
    cfg["latent_query_num"] = 64
    bb = build_backbone(BackboneConfig(type="kosmos2", config=cfg, tokenizer="bytes")).eval()
    with torch.no_grad():
        patches = bb.encode_image(torch.randn(2, 3, 224, 224))
        assert patches.shape == (2, 257, 24) and bb.num_patch_tokens == 257
        assert bb.project_native(patches).shape == (2, 64, 32) and bb.num_native_tokens == 64


def test_paligemma_gives_256_tokens_and_its_projector_reduces_nothing():
    bb = build_backbone(BackboneConfig(type="paligemma", config=_at_224(PALIGEMMA_TINY), tokenizer="bytes")).eval()
    with torch.no_grad():
        patches = bb.encode_image(torch.randn(1, 3, 224, 224))
        assert patches.shape == (1, 256, 24) and bb.num_patch_tokens == 256
        assert bb.project_native(patches).shape == (1, 256, 32)
    assert bb.model.config.text_config.use_bidirectional_attention is False  # causal: instruction KV reuse


def test_lm_with_cache_equals_one_pass(float64):
    for kind, tiny in (("kosmos2", KOSMOS_TINY), ("paligemma", PALIGEMMA_TINY)):
        bb = build_backbone(BackboneConfig(type=kind, config=tiny, tokenizer="bytes")).eval()
        x = torch.randn(1, 12, 32, dtype=torch.float64)
        mask = torch.ones(1, 12, dtype=torch.long)
        pos = torch.arange(12)[None]
        with torch.no_grad():
            full, _ = bb.lm_forward(x, attention_mask=mask, positions=pos)
            cache = bb.new_cache()
            a, _ = bb.lm_forward(x[:, :8], attention_mask=mask[:, :8], positions=pos[:, :8], cache=cache)
            b, _ = bb.lm_forward(x[:, 8:], attention_mask=mask, positions=pos[:, 8:], cache=cache)
        torch.testing.assert_close(torch.cat([a, b], 1), full)


def test_from_pretrained_on_a_local_directory(tmp_path):
    ref = Kosmos2Model(Kosmos2Config(**KOSMOS_TINY))
    ref.save_pretrained(tmp_path / "k")
    bb = build_backbone(BackboneConfig(type="kosmos2", path=str(tmp_path / "k"), tokenizer="bytes"))
    for (name, p), q in zip(ref.state_dict().items(), bb.model.state_dict().values()):
        assert torch.equal(p, q), name


def test_missing_files_are_named(tmp_path):
    with pytest.raises(BackboneError, match="directory not found"):
        build_backbone(BackboneConfig(type="kosmos2", path=str(tmp_path / "nope"), tokenizer="bytes"))
    (tmp_path / "k").mkdir()
    with pytest.raises(BackboneError, match="missing .*config.json"):
        build_backbone(BackboneConfig(type="kosmos2", path=str(tmp_path / "k"), tokenizer="bytes"))
    Kosmos2Config(**KOSMOS_TINY).save_pretrained(tmp_path / "k")
    with pytest.raises(BackboneError, match="no weights in .*model.safetensors"):
        build_backbone(BackboneConfig(type="kosmos2", path=str(tmp_path / "k"), tokenizer="bytes"))


def test_invalid_inline_config_is_a_config_error():
    with pytest.raises(ConfigError, match="backbone.config"):
        build_backbone(BackboneConfig(type="kosmos2", config={"text_config": 5}, tokenizer="bytes"))


def test_the_cache_goes_by_the_name_the_installed_transformers_takes():
    """transformers 5.2x calls it ``cache``; 5.17 (the GPU machine's) ``past_key_values``, and a wrong name is
    swallowed by ``**kwargs``: the step would attend to no instruction at all."""
    from torch import nn

    from robovlm.model.backbone import cache_argument

    class Old(nn.Module):
        def forward(self, inputs_embeds=None, past_key_values=None, **kwargs):
            return inputs_embeds

    class New(nn.Module):
        def forward(self, inputs_embeds=None, cache=None, **kwargs):
            return inputs_embeds

    assert cache_argument(Old()) == "past_key_values" and cache_argument(New()) == "cache"
