"""Tiny random configs of the real model classes, and batches for them."""

from __future__ import annotations

import copy
import os

import pytest
import torch

from robovlm.config import RoboVLMConfig

# Each test process gets its own DDS domain and never discovers anything beyond this machine.
os.environ["ROS_DOMAIN_ID"] = str(1 + os.getpid() % 200)
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"

IMAGE = 56  # 4x4 patches of 14 px: fast, same code path as 224 px

KOSMOS_TINY = {
    "text_config": {"embed_dim": 32, "layers": 2, "attention_heads": 4, "ffn_dim": 64, "vocab_size": 300,
                    "max_position_embeddings": 256},
    "vision_config": {"hidden_size": 24, "intermediate_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4,
                      "image_size": IMAGE, "patch_size": 14},
    "latent_query_num": 8,
}
PALIGEMMA_TINY = {
    "text_config": {"model_type": "gemma", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
                    "num_key_value_heads": 1, "head_dim": 8, "intermediate_size": 64, "vocab_size": 300},
    "vision_config": {"model_type": "siglip_vision_model", "hidden_size": 24, "intermediate_size": 48,
                      "num_hidden_layers": 2, "num_attention_heads": 4, "image_size": IMAGE, "patch_size": 14,
                      "projection_dim": 32},
    "projection_dim": 32,
}


def tiny_config(kind: str = "kosmos2", **overrides) -> RoboVLMConfig:
    """A tiny config of ``kind`` (kosmos2 | paligemma); dict overrides merge into sections, ``backbone`` replaces."""
    data = {
        "backbone": {"type": kind, "tokenizer": "bytes",
                     "config": copy.deepcopy(KOSMOS_TINY if kind == "kosmos2" else PALIGEMMA_TINY)},
        "image_size": IMAGE,
        "vision_resampler": {"vis_dim": 24, "depth": 2, "dim_head": 8, "heads": 2, "num_latents": 4},
        "act_head": {"type": "lstm", "hidden_size": 32, "num_layers": 2},
        "fusion": {"heads": 4, "num_subgoals": 2},
        "state_dim": 6,
        "window_size": 4,
        "fwd_pred_next_n": 3,
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict) and key != "backbone":
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return RoboVLMConfig.from_dict(data)


def make_batch(cfg: RoboVLMConfig, b: int = 2, t: int | None = None, *, seed: int = 0,
               dtype: torch.dtype = torch.float32) -> dict:
    g = torch.Generator().manual_seed(seed)
    t = t or cfg.window_size
    s = cfg.image_size
    return {
        "head_images": torch.randn(b, t, 3, s, s, generator=g, dtype=dtype),
        "hand_images": torch.randn(b, t, 3, s, s, generator=g, dtype=dtype),
        "hand_valid": torch.ones(b, t, dtype=torch.bool),
        "states": torch.randn(b, t, cfg.state_dim, generator=g, dtype=dtype),
        "instructions": ["go left around the box to the cup", "go right"][:b] + ["stop"] * max(0, b - 2),
        "actions": torch.rand(b, t, cfg.fwd_pred_next_n, cfg.action_dim, generator=g, dtype=dtype) * 2 - 1,
        "action_mask": torch.ones(b, t, cfg.fwd_pred_next_n, dtype=torch.bool),
    }


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def float64():
    """Build and run in float64, so equalities between two computations are checked beyond float32 rounding."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield torch.float64
    torch.set_default_dtype(old)
