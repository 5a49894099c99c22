"""Import an official RoboVLMs training config (``robovlm import-robovlms-config IN.json OUT.json``).
(Over 400 lines because each of RoboVLMs' 53 keys is mapped, ignored or refused here, with its reason.)

RoboVLMs configs mix the model with training infrastructure (paths, deepspeed, logging, data sets). Every key is
sorted into one of three lists: mapped (with its target), ignored (with the reason), or refused (it would change
the model in a way this project does not support; the import fails and names them all).

RoboVLMs' own defaults apply to keys a config leaves out (``use_state``, ``use_vision_resampler`` and
``use_hand_rgb`` off), ``parent`` configs are resolved recursively the way RoboVLMs merges them, ``train_setup``
becomes this project's ``train_setup`` (freezing, LoRA, gradient checkpointing), and the optimiser settings are
printed as the equivalent ``robovlm train`` flags.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .model import ConfigError, RoboVLMConfig

KOSMOS_PROMPT = "<grounding>An image of a robot {instruction}"  # RoboVLMs' Kosmos-2 prompt
SIGLIP_MEAN_STD = (0.5, 0.5, 0.5)  # PaliGemma's processor normalizes with 0.5 / 0.5, whatever image_mean says
ROBOVLMS_DEFAULTS = {"use_state": False, "use_vision_resampler": False, "use_hand_rgb": False}

_BACKBONES = {"kosmos": "kosmos2", "kosmos2": "kosmos2", "paligemma": "paligemma"}
_HEADS = {"LSTMDecoder": "lstm", "FCDecoder": "mlp", "MLPDecoder": "mlp", "GPTDecoder": "gpt"}

_IGNORED = {
    # paths, logging, infrastructure
    **{
        k: "path or logging setting; this project's CLI takes paths as arguments"
        for k in (
            "output_root",
            "log_root",
            "cache_root",
            "model_load_path",
            "model_load_source",
            "resume",
            "model_url",
            "model_config",
            "exp_name",
            "task_name",
            "config",
            "raw_config_path",
            "data_scale",
            "log_dir",
            "expected_output_dir",
        )
    },
    **{
        k: "training infrastructure (Lightning/deepspeed, GPUs, loaders); `robovlm train` sets its own"
        for k in (
            "trainer",
            "gpus",
            "num_nodes",
            "num_workers",
            "min_lr_scale",
            "warmup_ratio",
            "optimizer",
            "max_epochs",
            "gradient_clip_val",
            "accumulate_grad_batches",
            "precision",
            "strategy",
            "use_distributed_sampler",
        )
    },
    **{
        k: "data set definition; `robovlm train --data` reads the user's episodes"
        for k in ("train_dataset", "val_dataset", "task_name", "dataset")
    },
    **{
        k: "action normalization comes from the data (per-dimension range in stats.json)"
        for k in ("norm_action", "norm_min", "norm_max", "regular_action", "x_mean", "x_std")
    },
    **{
        k: "loss weight of a head this model does not have (gripper logits, caption, forward prediction)"
        for k in ("arm_gripper_loss_ratio", "cap_loss_ratio", "fwd_loss_ratio")
    },
    "robovlm_name": "class name; the backbone is chosen by 'model'/'vlm.name'",
    "use_obs_queries": "applies to RoboVLMs' interleaved history formats; the 'post' format used here has none",
    "vision_masked_ratio": "only used by the MIM observation loss, which is off",
    "use_tube_mask": "only used by the MIM observation loss, which is off",
    "use_pixel_loss": "only used by the MIM observation loss, which is off",
    "seq_len": "frames per VLM call; 'post' history runs the VLM on each frame alone",
    "parent": "resolved before the import (the parent's keys, overridden by this file's)",
}

_TRAIN_SETUP_REFUSE = {  # train_setup keys that add heads or change the architecture when true
    "predict_forward": "future-frame prediction head",
    "predict_forward_hand": "future hand-frame prediction head",
    "predict_caption": "caption head",
    "use_spatial_injector": "FALCON spatial injector",
}


@dataclass
class ImportReport:
    mapped: list[tuple[str, str]] = field(default_factory=list)
    ignored: list[tuple[str, str]] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)
    train_flags: list[str] = field(default_factory=list)
    """``robovlm train`` flags equivalent to the config's optimiser settings."""

    def format(self) -> str:
        lines = [f"mapped ({len(self.mapped)}):"] + [f"  {k} -> {v}" for k, v in self.mapped]
        lines += [f"ignored ({len(self.ignored)}):"] + [f"  {k}: {v}" for k, v in self.ignored]
        if self.refused:
            lines += [f"refused ({len(self.refused)}):"] + [f"  {k}: {v}" for k, v in self.refused]
        return "\n".join(lines)


def _deep_update(base: dict, update: dict) -> dict:
    """RoboVLMs' merge: nested dicts merge key by key, anything else replaces."""
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_update(base[key], value)
        else:
            base[key] = value
    return base


def load_robovlms_config(path: str | Path, *, _seen: tuple[Path, ...] = ()) -> dict:
    """Read a RoboVLMs config, resolving ``parent`` recursively as RoboVLMs does (the parent's keys, then this
    file's on top). A relative parent path is looked up, as RoboVLMs runs from its repository root, next to the
    file, then in each directory above it, then in the working directory."""
    path = Path(path).resolve()
    if path in _seen:
        raise ConfigError(f"{path}: 'parent' chain loops ({' -> '.join(str(p) for p in (*_seen, path))})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not a UTF-8 text file ({exc.reason} at byte {exc.start}); a RoboVLMs config is JSON"
        ) from exc
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read RoboVLMs config {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a RoboVLMs config is a JSON object")
    parent = data.get("parent")
    if not parent:
        return data
    rel = Path(parent)
    candidates = (
        [rel] if rel.is_absolute() else [d / rel for d in (path.parent, *path.parent.parents)] + [Path.cwd() / rel]
    )
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        raise ConfigError(
            f"{path}: parent {parent!r} not found (looked next to the file, in the directories "
            f"above it and in {Path.cwd()})"
        )
    return _deep_update(load_robovlms_config(found, _seen=(*_seen, path)), data)


class ImportRefused(ConfigError):
    """The RoboVLMs config uses model features this project does not support."""

    def __init__(self, report: ImportReport) -> None:
        reasons = "; ".join(f"{k}: {v}" for k, v in report.refused)
        super().__init__(
            f"cannot import: {len(report.refused)} key(s) would change the model in unsupported ways: {reasons}"
        )
        self.report = report


def import_robovlms_config(
    src: dict[str, Any], *, backbone_path: str | None = None, clip_path: str | None = None
) -> tuple[RoboVLMConfig, ImportReport]:
    """Translate a RoboVLMs config dict. ``backbone_path``/``clip_path`` override local weight directories."""
    rep = ImportReport()
    out: dict[str, Any] = {}

    def mapped(key: str, target: str, value: Any) -> None:
        rep.mapped.append((key, f"{target} = {value!r}"))

    # backbone
    vlm = src.get("vlm") or {}
    name = str(vlm.get("name") or src.get("model") or "").lower()
    if name not in _BACKBONES:
        rep.refused.append(("model", f"backbone {name!r} is not supported (supported: kosmos, paligemma)"))
    else:
        path = backbone_path or vlm.get("pretrained_model_name_or_path") or src.get("model_path")
        backbone = {"type": _BACKBONES[name], "tokenizer": "auto"}
        if path:
            backbone["path"] = str(Path(path).expanduser().resolve())
        else:
            rep.refused.append(
                ("vlm.pretrained_model_name_or_path", "no local backbone directory; pass --backbone-path")
            )
        out["backbone"] = backbone
        mapped("model/vlm", "backbone", backbone)
    for key in ("model", "vlm", "model_path", "tokenizer"):
        if key in src:
            rep.ignored.append((key, "read into 'backbone' above"))

    for key in (
        "image_size",
        "window_size",
        "fwd_pred_next_n",
        "use_hand_rgb",
        "use_vision_resampler",
        "use_clip_norm",
        "use_state",
    ):
        if key in src and src[key] is not None:
            out[key] = src[key]
            mapped(key, key, src[key])
        elif key in ROBOVLMS_DEFAULTS:
            out[key] = ROBOVLMS_DEFAULTS[key]
            rep.mapped.append((f"{key} (absent)", f"{key} = {ROBOVLMS_DEFAULTS[key]!r} (RoboVLMs' default)"))
    backbone_type = _BACKBONES.get(name)
    if backbone_type == "paligemma":
        out["image_mean"], out["image_std"] = SIGLIP_MEAN_STD, SIGLIP_MEAN_STD
        rep.mapped.append(("model (paligemma)", "image_mean = image_std = (0.5, 0.5, 0.5) (PaliGemma's processor)"))
        for key in ("image_mean", "image_std"):
            if key in src:
                rep.ignored.append((key, "RoboVLMs' PaliGemma backbone normalizes with its processor's 0.5 / 0.5"))
    else:
        for key in ("image_mean", "image_std"):
            if key in src:
                out[key] = src[key]
                mapped(key, key, src[key])
    if backbone_type == "kosmos2" and "backbone" in out:
        out["backbone"]["prompt"] = KOSMOS_PROMPT
        rep.mapped.append(("model (kosmos)", f"backbone.prompt = {KOSMOS_PROMPT!r} (RoboVLMs' Kosmos-2 prompt)"))
    if "clip_norm_ratio" in src:
        out["clip_norm_ratio"] = src["clip_norm_ratio"]
        mapped("clip_norm_ratio", "clip_norm_ratio", src["clip_norm_ratio"])
    if out.get("use_clip_norm"):
        if clip_path:
            out["clip_text"] = {"path": str(Path(clip_path).expanduser().resolve()), "tokenizer": "auto"}
            mapped("use_clip_norm", "clip_text.path", out["clip_text"]["path"])
        else:
            rep.refused.append(("use_clip_norm", "CLIP norm needs a local CLIP text encoder; pass --clip-path DIR"))

    vr = src.get("vision_resampler")
    if isinstance(vr, dict):
        keep = {k: vr[k] for k in ("vis_dim", "depth", "dim_head", "heads", "num_latents", "ff_mult") if k in vr}
        for k in set(vr) - set(keep):
            rep.ignored.append((f"vision_resampler.{k}", "not a resampler shape parameter"))
        out["vision_resampler"] = keep
        mapped("vision_resampler", "vision_resampler", keep)

    head = src.get("act_head")
    if isinstance(head, dict):
        _import_head(head, out, rep)
    for key in ("act_encoder", "fwd_head"):
        if src.get(key):
            rep.refused.append((key, "extra encoder/forward-prediction heads are not supported"))
        elif key in src:
            rep.ignored.append((key, "null (not used)"))

    for key in ("use_mim_obs_loss", "use_time_causal_attn"):
        if src.get(key):
            rep.refused.append((key, "changes training/attention in a way this model does not implement"))
        elif key in src:
            rep.ignored.append((key, "off"))

    setup = src.get("train_setup") or {}
    for key, what in _TRAIN_SETUP_REFUSE.items():
        if setup.get(key):
            rep.refused.append((f"train_setup.{key}", f"{what} is not supported"))
    if setup.get("predict_action") is False:
        rep.refused.append(("train_setup.predict_action", "this model always predicts actions"))
    if isinstance(setup, dict) and setup:
        _import_train_setup(setup, out, rep)
    _import_training(src, rep)

    handled = {
        "vlm",
        "model",
        "model_path",
        "tokenizer",
        "image_size",
        "window_size",
        "fwd_pred_next_n",
        "use_hand_rgb",
        "use_vision_resampler",
        "use_clip_norm",
        "use_state",
        "clip_norm_ratio",
        "vision_resampler",
        "act_head",
        "act_encoder",
        "fwd_head",
        "use_mim_obs_loss",
        "use_time_causal_attn",
        "train_setup",
        "image_mean",
        "image_std",
        "learning_rate",
        "weight_decay",
        "batch_size",
        "warmup_steps",
        "warmup_epochs",
        "seed",
    }
    for key in src:
        if key in handled:
            continue
        if key in _IGNORED:
            rep.ignored.append((key, _IGNORED[key]))
        else:
            rep.ignored.append((key, "not a RoboVLMs key this importer knows; check it does not change the model"))

    if rep.refused:
        raise ImportRefused(rep)
    return RoboVLMConfig.from_dict(out), rep


def _import_head(head: dict, out: dict, rep: ImportReport) -> None:
    htype = head.get("type")
    if htype not in _HEADS:
        rep.refused.append(("act_head.type", f"{htype!r} is not supported (supported: {', '.join(_HEADS)})"))
        return
    act: dict[str, Any] = {"type": _HEADS[htype]}
    if "hidden_size" in head:
        act["hidden_size"] = head["hidden_size"]
    if "num_layers" in head:
        act["num_layers"] = head["num_layers"]
    if "policy_rnn_dropout_p" in head:
        act["dropout"] = head["policy_rnn_dropout_p"]
    out["act_head"] = act
    rep.mapped.append(("act_head", f"act_head = {act!r}"))
    if "action_dim" in head:
        out["action_dim"] = head["action_dim"]
        rep.mapped.append(("act_head.action_dim", f"action_dim = {head['action_dim']!r} (all continuous)"))
    if head.get("action_space", "continuous") != "continuous":
        rep.refused.append(("act_head.action_space", f"{head['action_space']!r}: only continuous actions"))
    if head.get("history_type", "post") != "post":
        rep.refused.append(
            ("act_head.history_type", f"{head['history_type']!r}: only 'post' (per-frame VLM, history in the head)")
        )
    if head.get("with_history") is False:
        rep.ignored.append(("act_head.with_history", "false: use window_size 1 for a history-free policy"))
    if head.get("down_sample", "none") != "none":
        rep.refused.append(("act_head.down_sample", f"{head['down_sample']!r}: only one action token per frame"))
    if head.get("latent", 1) != 1:
        rep.refused.append(("act_head.latent", f"{head['latent']!r}: only one action token per frame"))
    for key in ("fwd_pred_next_n", "window_size"):
        if key in head:
            rep.ignored.append((f"act_head.{key}", "inherited from the top-level key"))
    known = {
        "type",
        "hidden_size",
        "num_layers",
        "policy_rnn_dropout_p",
        "action_dim",
        "action_space",
        "history_type",
        "with_history",
        "down_sample",
        "latent",
        "fwd_pred_next_n",
        "window_size",
    }
    for key in set(head) - known:
        rep.ignored.append((f"act_head.{key}", "head option without an equivalent here"))


def _import_train_setup(setup: dict, out: dict, rep: ImportReport) -> None:
    """RoboVLMs' ``train_setup`` -> this project's ``train_setup``."""
    ts: dict[str, Any] = {}
    if setup.get("freeze_backbone"):
        ts["freeze_language"] = True
        rep.mapped.append(("train_setup.freeze_backbone", "train_setup.freeze_language = True"))
    if setup.get("train_vision") is False:
        ts["freeze_vision"] = True
        rep.mapped.append(("train_setup.train_vision", "train_setup.freeze_vision = True"))
    if setup.get("gradient_checkpointing"):
        ts["gradient_checkpointing"] = True
        rep.mapped.append(("train_setup.gradient_checkpointing", "train_setup.gradient_checkpointing = True"))
    if setup.get("lora_enable"):
        lora = {
            "r": setup.get("lora_r", 8),
            "alpha": setup.get("lora_alpha", 16),
            "dropout": setup.get("lora_dropout", 0.05),
        }
        ts["lora"] = lora
        rep.mapped.append(("train_setup.lora_enable/lora_r/lora_alpha/lora_dropout", f"train_setup.lora = {lora!r}"))
        if setup.get("lora_bias", "none") != "none":
            rep.refused.append(("train_setup.lora_bias", f"{setup['lora_bias']!r}: adapters here train no biases"))
    elif any(k in setup for k in ("lora_r", "lora_alpha", "lora_dropout", "lora_bias")):
        rep.ignored.append(("train_setup.lora_*", "lora_enable is false"))
    if setup.get("bits", -1) not in (-1, 16, 32):
        rep.refused.append(("train_setup.bits", f"{setup['bits']}-bit quantized training is not supported"))
    notes = {
        "precision": "`robovlm train` uses bf16 autocast on CUDA",
        "train_text_embedding": "the text embeddings train with the language model (frozen with it)",
        "freeze_resampler": "the resampler always trains (it is new)",
        "freeze_mm_mlp_adapter": "LLaVA projector option; no such module here",
        "tune_mm_mlp_adapter": "LLaVA projector option; no such module here",
        "mm_projector_lr": "one learning rate for every trainable parameter",
        "mm_use_im_start_end": "LLaVA image tokens; not used by Kosmos-2 or PaliGemma here",
        "mm_use_im_patch_token": "LLaVA image tokens; not used by Kosmos-2 or PaliGemma here",
        "predict_action": "always on",
        "bits": "full precision weights",
    }
    for key, why in notes.items():
        if key in setup:
            rep.ignored.append((f"train_setup.{key}", why))
    if ts:
        out["train_setup"] = ts


def _import_training(src: dict, rep: ImportReport) -> None:
    """Optimiser settings -> the equivalent ``robovlm train`` flags (the model config holds no training loop)."""
    flags = []
    for key, flag in (
        ("learning_rate", "--lr"),
        ("weight_decay", "--weight-decay"),
        ("batch_size", "--batch-size"),
        ("warmup_steps", "--warmup-steps"),
        ("seed", "--seed"),
    ):
        if src.get(key) is not None:
            flags += [flag, str(src[key])]
            rep.mapped.append((key, f"robovlm train {flag} {src[key]}"))
    if src.get("warmup_epochs"):
        rep.ignored.append(
            (
                "warmup_epochs",
                f"{src['warmup_epochs']} epochs: `robovlm train` counts warm-up in "
                "steps (--warmup-steps); the number depends on your data set's size",
            )
        )
    rep.train_flags = flags
