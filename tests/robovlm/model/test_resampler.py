import pytest
import torch

from robovlm.configs.model import ConfigError
from robovlm.model.policy import RoboVLM
from robovlm.model.resampler import PerceiverResampler
from tests.conftest import make_batch, tiny_config


@pytest.mark.parametrize("n", [257, 256, 196, 5])
def test_any_token_count_becomes_num_latents(n):
    r = PerceiverResampler(dim=16, depth=2, dim_head=8, heads=2, num_latents=6)
    assert r(torch.randn(3, n, 16)).shape == (3, 6, 16)
    assert r(torch.randn(2, 4, n, 16)).shape == (2, 4, 6, 16)


def test_time_axis_is_per_frame():
    r = PerceiverResampler(dim=16, depth=1, dim_head=8, heads=2, num_latents=3)
    x = torch.randn(2, 4, 10, 16)
    torch.testing.assert_close(r(x)[:, 2], r(x[:, 2]))


def test_wrong_width_is_a_clear_error():
    r = PerceiverResampler(dim=16, depth=1, num_latents=3)
    with pytest.raises(ValueError, match="width 16"):
        r(torch.randn(1, 10, 8))
    with pytest.raises(ValueError, match=r"\(B, N, D\)"):
        r(torch.randn(10, 16))


def _model(**resampler):
    return RoboVLM(tiny_config(vision_resampler=resampler)).eval()


def test_every_resampler_key_shapes_the_model_module():
    base = _model()
    r = base.resampler
    assert len(r.layers) == 2 and r.latents.shape == (4, 24)
    assert r.layers[0][0].to_q.out_features == 8 * 2 and r.layers[0][0].heads == 2
    # depth
    assert len(_model(depth=3).resampler.layers) == 3
    # num_latents: fewer tokens per camera and into the language model
    m = _model(num_latents=7)
    assert m.resampler.latents.shape[0] == 7 and m.tokens_per_camera == 7
    assert m.tokens_per_frame == base.tokens_per_frame + 2 * 3
    # dim_head and heads: the attention's inner width and head split
    m = _model(dim_head=16)
    assert m.resampler.layers[0][0].to_q.out_features == 16 * 2
    m = _model(heads=4)
    assert m.resampler.layers[0][0].heads == 4 and m.resampler.layers[0][0].to_q.out_features == 8 * 4
    # ff_mult
    assert _model(ff_mult=2).resampler.layers[0][1][1].out_features == 48
    # vis_dim must equal the encoder width; the error names both numbers
    with pytest.raises(ConfigError, match=r"vis_dim \(32\) must equal the kosmos2 vision encoder width \(24\)"):
        _model(vis_dim=32)


def test_heads_change_the_output_with_identical_weights():
    torch.manual_seed(0)
    a = PerceiverResampler(dim=16, depth=1, dim_head=4, heads=4, num_latents=3)
    b = PerceiverResampler(dim=16, depth=1, dim_head=8, heads=2, num_latents=3)
    b.load_state_dict(a.state_dict())  # same parameter shapes (inner width 16), different head split
    x = torch.randn(1, 10, 16)
    assert not torch.allclose(a(x), b(x))


def test_resampler_on_reduces_language_model_tokens_and_off_uses_backbone_projector():
    on = RoboVLM(tiny_config("paligemma", image_size=56)).eval()
    off = RoboVLM(tiny_config("paligemma", use_vision_resampler=False)).eval()
    assert off.tokens_per_camera == off.backbone.num_patch_tokens == 16  # SigLIP: no reduction of its own
    assert on.tokens_per_camera == 4
    assert not hasattr(off, "resampler")
    cfg = off.config
    out = off(make_batch(cfg, 1, 2))["actions"]
    assert out.shape == (1, 2, cfg.fwd_pred_next_n, cfg.action_dim)
