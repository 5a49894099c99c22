"""Model configuration: strict dataclasses, JSON in and out.
(Over 400 lines because every section of the model config is here with its documented, validated fields, so the
schema reads top to bottom in one file.)

Every field is documented and validated in ``__post_init__``; an unknown key is an error that names it
and the closest valid key. ``load_config(path)`` is the entry point. Official RoboVLMs training configs
are imported by ``robovlm.config_import`` (``robovlm import-robovlms-config``).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

from ..errors import UserError

__all__ = [
    "ActHeadConfig",
    "BackboneConfig",
    "ClipTextConfig",
    "ConfigError",
    "FusionConfig",
    "LoraConfig",
    "RoboVLMConfig",
    "TrainSetupConfig",
    "VisionResamplerConfig",
    "load_config",
    "save_config",
]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class ConfigError(UserError, ValueError):
    """A configuration value or key is invalid; the message names the field and says what is accepted."""


def _check(cond: bool, where: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{where}: {msg}")


def _positive_int(value: Any, where: str) -> None:
    _check(
        isinstance(value, int) and not isinstance(value, bool) and value > 0,
        where,
        f"must be a positive integer, got {value!r}",
    )


def _one_of(value: Any, choices: tuple[str, ...], where: str) -> None:
    _check(value in choices, where, f"must be one of {list(choices)}, got {value!r}")


def _bool(value: Any, where: str) -> None:
    _check(isinstance(value, bool), where, f"must be true or false, got {value!r}")


@dataclass
class BackboneConfig:
    """Which Hugging Face VLM provides the vision encoder and the language model."""

    type: str = "kosmos2"
    """Adapter: ``kosmos2`` (Kosmos2Model, ViT-L/14 -> 257 patch tokens) or ``paligemma`` (SigLIP -> 256)."""
    path: str | None = None
    """Local directory with the backbone's ``config.json`` and weights, loaded with ``from_pretrained``."""
    config: dict | None = None
    """The backbone's own ``transformers`` config as a dict, for a randomly initialised backbone (tests, bring-up).
    Exactly one of ``path`` and ``config`` is set."""
    tokenizer: str = "auto"
    """``auto``: the tokenizer saved with the backbone at ``path``; ``bytes``: the built-in UTF-8 byte tokenizer
    (vocabulary 259), for random-init backbones that have no tokenizer files; ``checkpoint``: the files in a RoboVLM
    checkpoint's ``tokenizer/`` folder (written by ``save_pretrained``)."""
    prompt: str = "An image of a robot {instruction}"
    """Text prefix around the instruction; must contain ``{instruction}``. RoboVLMs uses this sentence."""
    max_instruction_tokens: int = 128
    """Longest instruction accepted, in tokens (the prompt around it not counted). The node refuses a longer one and
    stops; memory and compute grow with the prompt, so this bounds what anyone publishing on the topic can cost."""

    def __post_init__(self) -> None:
        _one_of(self.type, ("kosmos2", "paligemma"), "backbone.type")
        _check(
            (self.path is None) != (self.config is None),
            "backbone",
            "set exactly one of 'path' (pretrained weights) and 'config' (random init); "
            f"got path={self.path!r}, config={'set' if self.config is not None else None}",
        )
        if self.path is not None:
            _check(
                isinstance(self.path, str) and self.path != "",
                "backbone.path",
                f"must be a non-empty string, got {self.path!r}",
            )
        if self.config is not None:
            _check(
                isinstance(self.config, dict), "backbone.config", f"must be an object, got {type(self.config).__name__}"
            )
        _one_of(self.tokenizer, ("auto", "bytes", "checkpoint"), "backbone.tokenizer")
        _check(
            self.tokenizer != "auto" or self.path is not None,
            "backbone.tokenizer",
            "'auto' loads the tokenizer from backbone.path, which is not set; use 'bytes' for a random-init backbone",
        )
        _check(
            isinstance(self.prompt, str) and "{instruction}" in self.prompt,
            "backbone.prompt",
            f"must contain '{{instruction}}', got {self.prompt!r}",
        )
        _positive_int(self.max_instruction_tokens, "backbone.max_instruction_tokens")


@dataclass
class VisionResamplerConfig:
    """Perceiver resampler (Flamingo): patch tokens of any count -> ``num_latents`` tokens. Every key is honoured."""

    vis_dim: int = 1024
    """Width of the patch tokens it consumes; must equal the vision encoder width (checked when the model is built)."""
    depth: int = 8
    """Number of (latent cross-attention, feed-forward) layers."""
    dim_head: int = 64
    """Width of each attention head."""
    heads: int = 8
    """Number of attention heads."""
    num_latents: int = 64
    """Tokens out per camera frame."""
    ff_mult: int = 4
    """Feed-forward hidden width as a multiple of ``vis_dim``."""

    def __post_init__(self) -> None:
        for name in ("vis_dim", "depth", "dim_head", "heads", "num_latents", "ff_mult"):
            _positive_int(getattr(self, name), f"vision_resampler.{name}")


@dataclass
class ActHeadConfig:
    """Policy head over the window of action-token features."""

    type: str = "lstm"
    """``lstm`` (RoboVLMs default), ``mlp`` (per-step), or ``gpt`` (causal transformer decoder)."""
    hidden_size: int = 1024
    """Hidden width of the head."""
    num_layers: int = 4
    """LSTM layers, MLP hidden layers, or GPT blocks."""
    num_heads: int = 8
    """Attention heads (``gpt`` only); must divide ``hidden_size``."""
    dropout: float = 0.0
    """Dropout inside the head, in [0, 1)."""

    def __post_init__(self) -> None:
        _one_of(self.type, ("lstm", "mlp", "gpt"), "act_head.type")
        _positive_int(self.hidden_size, "act_head.hidden_size")
        _positive_int(self.num_layers, "act_head.num_layers")
        _positive_int(self.num_heads, "act_head.num_heads")
        if self.type == "gpt":
            _check(
                self.hidden_size % self.num_heads == 0,
                "act_head",
                f"hidden_size {self.hidden_size} must be divisible by num_heads {self.num_heads}",
            )
        _check(
            isinstance(self.dropout, (int, float)) and 0.0 <= self.dropout < 1.0,
            "act_head.dropout",
            f"must be in [0, 1), got {self.dropout!r}",
        )


@dataclass
class ClipTextConfig:
    """Frozen CLIP text encoder used by CLIP normalization (training only, never in the optimizer)."""

    path: str | None = None
    """Local directory of a ``CLIPTextModelWithProjection`` (or full CLIP) checkpoint."""
    config: dict | None = None
    """A ``CLIPTextConfig`` dict for a random-init encoder (tests). Exactly one of ``path`` and ``config``."""
    tokenizer: str = "auto"
    """``auto``: the tokenizer saved at ``path``; ``bytes``: the built-in byte tokenizer."""

    def __post_init__(self) -> None:
        _check((self.path is None) != (self.config is None), "clip_text", "set exactly one of 'path' and 'config'")
        _one_of(self.tokenizer, ("auto", "bytes"), "clip_text.tokenizer")
        _check(
            self.tokenizer == "bytes" or self.path is not None,
            "clip_text.tokenizer",
            "'auto' loads the tokenizer from clip_text.path, which is not set; use 'bytes'",
        )


@dataclass
class FusionConfig:
    """Shared settings of the optional fusion modules (claw matrix, hierarchical planning, advanced attention)."""

    heads: int = 8
    """Attention heads in every fusion module; must divide the language model width."""
    num_subgoals: int = 4
    """Subgoal tokens of hierarchical planning."""
    dropout: float = 0.0
    """Attention dropout, in [0, 1)."""

    def __post_init__(self) -> None:
        _positive_int(self.heads, "fusion.heads")
        _positive_int(self.num_subgoals, "fusion.num_subgoals")
        _check(
            isinstance(self.dropout, (int, float)) and 0.0 <= self.dropout < 1.0,
            "fusion.dropout",
            f"must be in [0, 1), got {self.dropout!r}",
        )


@dataclass
class LoraConfig:
    """Low-rank adapters (``peft``) on the backbone's attention projections; the base weights stay frozen and the
    adapters are merged into them when a checkpoint is saved, so inference needs neither peft nor adapters."""

    r: int = 8
    """Rank of each adapter."""
    alpha: int = 16
    """Scaling numerator: the update is ``alpha / r * B @ A``."""
    dropout: float = 0.05
    """Dropout on the adapter input, in [0, 1)."""
    target_modules: list[str] | None = None
    """Linear layers to adapt, by name suffix; None: the backbone's attention projections (Kosmos-2
    ``q_proj, k_proj, v_proj, out_proj``; Gemma and SigLIP ``q_proj, k_proj, v_proj, o_proj/out_proj``)."""
    vision: bool = False
    """Also adapt the vision encoder (otherwise only the language model)."""

    def __post_init__(self) -> None:
        _positive_int(self.r, "train_setup.lora.r")
        _check(
            isinstance(self.alpha, (int, float)) and self.alpha > 0,
            "train_setup.lora.alpha",
            f"must be positive, got {self.alpha!r}",
        )
        _check(
            isinstance(self.dropout, (int, float)) and 0.0 <= self.dropout < 1.0,
            "train_setup.lora.dropout",
            f"must be in [0, 1), got {self.dropout!r}",
        )
        _check(
            self.target_modules is None
            or (
                isinstance(self.target_modules, list)
                and len(self.target_modules) > 0
                and all(isinstance(t, str) and t for t in self.target_modules)
            ),
            "train_setup.lora.target_modules",
            f"must be a non-empty list of names, got {self.target_modules!r}",
        )
        _bool(self.vision, "train_setup.lora.vision")


@dataclass
class TrainSetupConfig:
    """What fine-tuning trains (RoboVLMs' ``train_setup``). The policy's own modules (resampler, projector,
    embeddings, fusion, head) always train."""

    freeze_vision: bool = False
    """Freeze the backbone's vision encoder (RoboVLMs ``train_vision: false``)."""
    freeze_language: bool = False
    """Freeze the backbone's language model (RoboVLMs ``freeze_backbone``); LoRA adapters on it still train."""
    lora: LoraConfig | None = None
    """Low-rank adapters on the language model (and the vision encoder with ``lora.vision``); None: off."""
    gradient_checkpointing: bool = False
    """Recompute the backbone's layer activations in the backward pass: less memory, about a third more time."""
    frozen_dtype: str = "float32"
    """``float32`` | ``bfloat16``: the dtype the backbone's frozen weights are held in while training (LoRA's base
    layers, a frozen vision encoder or language model). ``bfloat16`` halves their memory; they are cast to the
    input's dtype at use (``model.held_weights``), and adapters and the policy's own modules stay fp32."""

    def __post_init__(self) -> None:
        for name in ("freeze_vision", "freeze_language", "gradient_checkpointing"):
            _bool(getattr(self, name), f"train_setup.{name}")
        _check(
            self.frozen_dtype in ("float32", "bfloat16"),
            "train_setup.frozen_dtype",
            f"must be float32 or bfloat16, got {self.frozen_dtype!r}",
        )
        _check(
            self.frozen_dtype == "float32" or self.freeze_vision or self.freeze_language or self.lora is not None,
            "train_setup.frozen_dtype",
            "bfloat16 holds frozen weights in bf16, but nothing is frozen (set lora, freeze_vision or freeze_language)",
        )


@dataclass
class RoboVLMConfig:
    """The whole model. Defaults follow RoboVLMs' Kosmos-2 + LSTM policy, adapted to 2D base velocities."""

    backbone: BackboneConfig = field(default_factory=lambda: BackboneConfig(config={}, tokenizer="bytes"))
    """The VLM that supplies the vision encoder and language model."""
    image_size: int = 224
    """Square input resolution of every camera; must match the vision encoder's ``image_size``."""
    image_mean: tuple[float, float, float] = CLIP_MEAN
    """Per-channel RGB mean for normalization (CLIP's by default; SigLIP uses 0.5)."""
    image_std: tuple[float, float, float] = CLIP_STD
    """Per-channel RGB standard deviation for normalization."""
    use_vision_resampler: bool = True
    """Resample each frame's patch tokens to ``vision_resampler.num_latents`` tokens and project them to the
    language model width; off: the backbone's own projector (Kosmos-2: 64 queries; PaliGemma: all 256 tokens)."""
    vision_resampler: VisionResamplerConfig = field(default_factory=VisionResamplerConfig)
    """Resampler shape; every key changes the module."""
    use_hand_rgb: bool = True
    """Feed the gripper (hand) camera as a second image stream with its own type embedding."""
    missing_hand: str = "zero"
    """When a frame has no hand image: ``zero`` (zero tokens plus a learned 'missing' marker) or ``error``
    (raise, so the node stops the robot)."""
    use_state: bool = True
    """Add one state-embedding token per frame, built from the normalized joint state."""
    state_dim: int = 6
    """Length of the joint-state vector (the node builds it from ``state_joints``)."""
    action_dim: int = 2
    """Action components predicted per step (default: linear.x, linear.y)."""
    window_size: int = 8
    """Frames of history the policy head sees."""
    fwd_pred_next_n: int = 10
    """Actions predicted per step (the chunk length)."""
    act_head: ActHeadConfig = field(default_factory=ActHeadConfig)
    """Policy head."""
    use_clip_norm: bool = False
    """Auxiliary training loss aligning the pooled action-token state with the CLIP text embedding."""
    clip_norm_ratio: float = 0.05
    """Weight of the CLIP-norm loss (RoboVLMs default 0.05)."""
    clip_text: ClipTextConfig | None = None
    """Frozen CLIP text encoder; required when ``use_clip_norm`` is on."""
    use_claw_matrix: bool = False
    """Claw-matrix fusion: per-frame cross-attention among the vision, language and state/action streams."""
    use_hierarchical: bool = False
    """Hierarchical planning: subgoal tokens over the window condition every action feature."""
    use_advanced_attention: bool = False
    """Advanced attention: cross-modal attention per frame, then causal temporal attention over the window."""
    use_instruction_film: bool = False
    """Scale and shift each frame's action feature by the pooled instruction (FiLM, zero-initialized): a
    multiplicative path for commands that depend on the instruction and the image together; measured in
    ``bench/results/training.md``."""
    fusion: FusionConfig = field(default_factory=FusionConfig)
    """Settings shared by the fusion modules."""
    train_setup: TrainSetupConfig = field(default_factory=TrainSetupConfig)
    """Fine-tuning mode: frozen parts, LoRA, gradient checkpointing (training only; inference ignores it)."""

    def __post_init__(self) -> None:
        _positive_int(self.image_size, "image_size")
        for name in ("image_mean", "image_std"):
            value = getattr(self, name)
            _check(
                isinstance(value, (list, tuple))
                and len(value) == 3
                and all(isinstance(v, (int, float)) and math.isfinite(v) for v in value),
                name,
                f"must be 3 finite numbers (R, G, B), got {value!r}",
            )
            setattr(self, name, tuple(float(v) for v in value))
        _check(all(v > 0 for v in self.image_std), "image_std", f"must be positive, got {self.image_std!r}")
        for name in (
            "use_vision_resampler",
            "use_hand_rgb",
            "use_state",
            "use_clip_norm",
            "use_claw_matrix",
            "use_hierarchical",
            "use_advanced_attention",
            "use_instruction_film",
        ):
            _bool(getattr(self, name), name)
        _one_of(self.missing_hand, ("zero", "error"), "missing_hand")
        _positive_int(self.state_dim, "state_dim")
        _positive_int(self.action_dim, "action_dim")
        _positive_int(self.window_size, "window_size")
        _positive_int(self.fwd_pred_next_n, "fwd_pred_next_n")
        _check(
            isinstance(self.clip_norm_ratio, (int, float))
            and math.isfinite(self.clip_norm_ratio)
            and self.clip_norm_ratio >= 0,
            "clip_norm_ratio",
            f"must be a finite number >= 0, got {self.clip_norm_ratio!r}",
        )
        if self.use_clip_norm:
            _check(
                self.clip_text is not None,
                "clip_text",
                "use_clip_norm is true but no clip_text encoder is configured (set clip_text.path)",
            )

    # -- JSON ---------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return _to_jsonable(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict) -> RoboVLMConfig:
        return _from_dict(cls, data, "")


def _to_jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_jsonable(v) for v in value]
    return value


def _from_dict(cls: type, data: Any, prefix: str) -> Any:
    """Build dataclass ``cls`` from ``data``, refusing unknown keys with the closest valid one."""
    where = prefix.rstrip(".") or "config"
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: must be a JSON object, got {type(data).__name__}")
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1, cutoff=0.5)
            hint = f"; did you mean '{prefix}{close[0]}'?" if close else f"; valid keys: {', '.join(names)}"
            raise ConfigError(f"unknown key '{prefix}{key}'{hint}")
        sub = _dataclass_in(hints[key])
        kwargs[key] = _from_dict(sub, value, f"{prefix}{key}.") if sub is not None and value is not None else value
    try:
        return cls(**kwargs)
    except TypeError as exc:  # wrong argument shapes surface as config errors, never as crashes
        raise ConfigError(f"{where}: {exc}") from exc


def _dataclass_in(tp: Any) -> type | None:
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return tp
    if get_origin(tp) is Union or str(get_origin(tp)) == "<class 'types.UnionType'>":
        for arg in get_args(tp):
            if isinstance(arg, type) and dataclasses.is_dataclass(arg):
                return arg
    return None


def load_config(path: str | Path) -> RoboVLMConfig:
    """Read a RoboVLM config JSON (a config file, or a checkpoint's ``config.json`` whose ``model`` key holds it)."""
    path = Path(path)
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not a UTF-8 text file ({exc.reason} at byte {exc.start}); a config is JSON"
        ) from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from exc
    if isinstance(data, dict) and "robovlm_config_version" in data:  # checkpoint config.json
        data = data.get("model")
    _resolve_paths(data, path.parent)
    try:
        return RoboVLMConfig.from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def _resolve_paths(data: Any, base: Path) -> None:
    """Relative weight directories in a config file are relative to the file, not to the working directory."""
    if not isinstance(data, dict):
        return
    for key in ("backbone", "clip_text"):
        sub = data.get(key)
        if isinstance(sub, dict) and isinstance(sub.get("path"), str) and not Path(sub["path"]).is_absolute():
            sub["path"] = str((base / sub["path"]).resolve())


def save_config(config: RoboVLMConfig, path: str | Path) -> None:
    """Write ``config`` as JSON to ``path``, making its directory (``out/imported.json`` on a fresh checkout)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config.to_dict(), indent=2) + "\n")
