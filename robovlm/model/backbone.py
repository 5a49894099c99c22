"""Adapters over Hugging Face VLMs: one interface for the vision encoder, the backbone's own projector, text
embeddings and a language-model forward on ``inputs_embeds`` with a KV cache.

Two adapters on real ``transformers`` classes:
- ``kosmos2``: ``Kosmos2Model``. CLIP ViT-L/14 at 224 px -> 257 patch tokens (width 1024); its own projector
  (64 latent queries, cross-attention) -> 64 tokens of the LM width.
- ``paligemma``: ``PaliGemmaModel``. SigLIP at 224 px -> 256 tokens (width 1152); its projector is one Linear and
  reduces nothing, which is where the resampler matters most.

Weights load with ``from_pretrained`` from a local directory only; a missing file is named in the error.
"""

from __future__ import annotations

import inspect
import logging
from pathlib import Path

import torch
from huggingface_hub.errors import StrictDataclassError
from torch import nn
from transformers import DynamicCache, Kosmos2Config, Kosmos2Model, PaliGemmaConfig, PaliGemmaModel, PreTrainedModel

from ..configs.model import BackboneConfig, ConfigError
from ..errors import UserError

log = logging.getLogger(__name__)

WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def cache_argument(module: nn.Module) -> str:
    """The name the language model's ``forward`` takes its key/value cache by: ``cache`` in transformers from 5.2x,
    ``past_key_values`` before (5.17, the GPU machine's); passed by the wrong name it is silently ignored."""
    params = inspect.signature(module.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


class BackboneError(UserError, FileNotFoundError):
    """Backbone files are missing or unusable; the message names the file."""


def check_pretrained_dir(path: str | Path, what: str = "backbone") -> Path:
    """Return ``path`` if it holds ``config.json`` and a weights file, else raise naming what is missing."""
    path = Path(path)
    if not path.is_dir():
        raise BackboneError(f"{what} directory not found: {path}")
    if not (path / "config.json").is_file():
        raise BackboneError(f"{what}: missing {path / 'config.json'}")
    if not any((path / name).is_file() for name in WEIGHT_FILES):
        raise BackboneError(
            f"{what}: no weights in {path} (expected one of {', '.join(WEIGHT_FILES)}); "
            "download the checkpoint there or use a random-init 'config' for bring-up"
        )
    return path


def stack_cache(cache: DynamicCache) -> torch.Tensor:
    """A cache -> (layers, 2, B, kv_heads, L, head_dim): keys and values of every layer in one tensor."""
    return torch.stack([torch.stack([layer.keys, layer.values]) for layer in cache.layers])


def unstack_cache(past: torch.Tensor) -> DynamicCache:
    """(layers, 2, B, kv_heads, L, head_dim) -> a cache the language model extends in place."""
    cache = DynamicCache()
    for i in range(past.shape[0]):
        cache.update(past[i, 0], past[i, 1], i)
    return cache


class BackboneAdapter(nn.Module):
    """Common interface. Shapes: pixels (B, 3, H, W); patch tokens (B, P, vis_dim); LM tokens (B, L, D)."""

    type: str
    model: PreTrainedModel

    # -- sizes ------------------------------------------------------------------------------------------------
    @property
    def vision_width(self) -> int:
        raise NotImplementedError

    @property
    def lm_width(self) -> int:
        raise NotImplementedError

    @property
    def image_size(self) -> int:
        return int(self.model.config.vision_config.image_size)

    @property
    def num_patch_tokens(self) -> int:
        raise NotImplementedError

    @property
    def num_native_tokens(self) -> int:
        """Tokens per frame out of the backbone's own projector."""
        raise NotImplementedError

    # -- compute ----------------------------------------------------------------------------------------------
    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalized pixels -> (B, P, vis_dim) patch tokens, as the backbone's projector consumes them."""
        raise NotImplementedError

    def project_native(self, patches: torch.Tensor) -> torch.Tensor:
        """(B, P, vis_dim) -> (B, num_native_tokens, D) through the backbone's own projector."""
        raise NotImplementedError

    def embed_text(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, L) token ids -> (B, L, D) in the scale the LM expects for ``inputs_embeds``."""
        return self.model.get_input_embeddings()(ids)

    def language_model(self) -> nn.Module:
        raise NotImplementedError

    def _position_offset(self) -> int:
        return 0

    def lm_forward(
        self,
        embeds: torch.Tensor,
        *,
        attention_mask: torch.Tensor,
        positions: torch.Tensor,
        cache: DynamicCache | None = None,
    ) -> tuple[torch.Tensor, DynamicCache | None]:
        """Run the language model on ``embeds`` (B, L, D).

        ``attention_mask`` (B, past + L) is 1 for real tokens; ``positions`` (B, L) are zero-based token positions;
        ``cache`` holds earlier keys and values and is extended in place. Returns the last hidden states (B, L, D).
        """
        lm = self.language_model()
        out = lm(
            inputs_embeds=embeds,
            attention_mask=attention_mask,
            position_ids=positions + self._position_offset(),
            use_cache=cache is not None,
            **{cache_argument(lm): cache},
        )
        return out.last_hidden_state, cache

    @staticmethod
    def prepare_config(hf_config):
        """Adjust the backbone's config before the model is built (see the PaliGemma adapter)."""
        return hf_config

    def new_cache(self) -> DynamicCache:
        return DynamicCache()

    def use_traceable_attention(self) -> None:
        """Switch the backbone to eager attention before an ONNX export. torch.onnx exports a boolean mask given to
        ``scaled_dot_product_attention`` as fp32 constants, so in an fp16 export the attention scores, then every
        layer after the first attention, became fp32 and their weights were folded into fp32 copies (PaliGemma:
        graphs of 9.3 GiB for 5.7 GiB of fp16 weights). Eager attention adds a mask in the model's dtype."""
        self.model.set_attn_implementation("eager")

    def hf_config_dict(self) -> dict:
        return self.model.config.to_dict()


class Kosmos2Backbone(BackboneAdapter):
    type = "kosmos2"

    def __init__(self, model: Kosmos2Model) -> None:
        super().__init__()
        self.model = model

    @property
    def vision_width(self) -> int:
        return int(self.model.config.vision_config.hidden_size)

    @property
    def lm_width(self) -> int:
        return int(self.model.config.text_config.embed_dim)

    @property
    def num_patch_tokens(self) -> int:
        vc = self.model.config.vision_config
        return (vc.image_size // vc.patch_size) ** 2 + 1  # + CLS

    @property
    def num_native_tokens(self) -> int:
        return int(self.model.config.latent_query_num)

    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        vision = self.model.vision_model
        hidden = vision(pixel_values=pixel_values).last_hidden_state  # (B, P, vis_dim)
        hidden = vision.model.post_layernorm(hidden)
        return nn.functional.normalize(hidden, dim=-1)  # Kosmos-2 feeds L2-normalized tokens to its projector

    def project_native(self, patches: torch.Tensor) -> torch.Tensor:
        return self.model.image_to_text_projection(patches)[0]  # (B, 64, D)

    def language_model(self) -> nn.Module:
        return self.model.text_model

    def _position_offset(self) -> int:
        # Kosmos-2's sinusoidal table reserves ids up to padding_idx; real positions start at padding_idx + 1.
        return int(self.model.config.text_config.pad_token_id) + 1


class PaliGemmaBackbone(BackboneAdapter):
    type = "paligemma"

    def __init__(self, model: PaliGemmaModel) -> None:
        super().__init__()
        self.model = model

    @staticmethod
    def prepare_config(hf_config):
        # PaliGemma attends bidirectionally over image + prompt. Here the frame tokens follow the instruction and
        # the instruction's keys and values are reused for every frame, which needs a causal decoder.
        hf_config.text_config.use_bidirectional_attention = False
        return hf_config

    @property
    def vision_width(self) -> int:
        return int(self.model.config.vision_config.hidden_size)

    @property
    def lm_width(self) -> int:
        return int(self.model.config.text_config.hidden_size)

    @property
    def num_patch_tokens(self) -> int:
        vc = self.model.config.vision_config
        return (vc.image_size // vc.patch_size) ** 2  # SigLIP has no CLS token

    @property
    def num_native_tokens(self) -> int:
        return self.num_patch_tokens

    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model.vision_tower(pixel_values=pixel_values).last_hidden_state  # (B, 256, vis_dim)

    def project_native(self, patches: torch.Tensor) -> torch.Tensor:
        return self.model.multi_modal_projector(patches)  # (B, 256, D)

    def language_model(self) -> nn.Module:
        return self.model.language_model

    def _position_offset(self) -> int:
        return 1  # PaliGemma positions are 1-indexed


_ADAPTERS: dict[str, tuple[type[BackboneAdapter], type[PreTrainedModel], type]] = {
    "kosmos2": (Kosmos2Backbone, Kosmos2Model, Kosmos2Config),
    "paligemma": (PaliGemmaBackbone, PaliGemmaModel, PaliGemmaConfig),
}


def hf_config_for(cfg: BackboneConfig):
    """The backbone's ``transformers`` config (from ``path/config.json`` or the inline dict), without weights."""
    _, _, config_cls = _ADAPTERS[cfg.type]
    if cfg.path is not None:
        path = Path(cfg.path)
        if not (path / "config.json").is_file():
            raise BackboneError(f"backbone: missing {path / 'config.json'}")
        return config_cls.from_pretrained(str(path), local_files_only=True)
    data = dict(cfg.config or {})
    data.pop("model_type", None)
    try:
        return config_cls(**data)
    except (TypeError, ValueError, StrictDataclassError) as exc:
        raise ConfigError(f"backbone.config: not a valid {config_cls.__name__}: {exc}") from exc


def build_backbone(cfg: BackboneConfig, *, load_weights: bool = True) -> BackboneAdapter:
    """Build the adapter: ``from_pretrained`` on ``cfg.path`` or random init from ``cfg.config``.

    ``load_weights=False`` builds the architecture only (random init), e.g. when a RoboVLM checkpoint supplies
    all weights itself, or to count parameters.
    """
    adapter_cls, model_cls, _ = _ADAPTERS[cfg.type]
    if cfg.path is not None and load_weights:
        check_pretrained_dir(cfg.path)
    hf_config = adapter_cls.prepare_config(hf_config_for(cfg))
    if cfg.path is not None and load_weights:
        log.info("loading %s backbone from %s", cfg.type, cfg.path)
        model = model_cls.from_pretrained(str(cfg.path), config=hf_config, local_files_only=True, dtype=torch.float32)
    else:
        model = model_cls(hf_config)
    return adapter_cls(model)
