"""Import an official RoboVLMs training config (``robovlm import-robovlms-config IN.json OUT.json``).

RoboVLMs configs mix the model with training infrastructure (paths, deepspeed, logging, data sets). Every key is
sorted into one of three lists: mapped (with its target), ignored (with the reason), or refused (it would change
the model in a way this project does not support; the import fails and names them all).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import ConfigError, RoboVLMConfig

_BACKBONES = {"kosmos": "kosmos2", "kosmos2": "kosmos2", "paligemma": "paligemma"}
_HEADS = {"LSTMDecoder": "lstm", "FCDecoder": "mlp", "MLPDecoder": "mlp", "GPTDecoder": "gpt"}

_IGNORED = {
    # paths, logging, infrastructure
    **{k: "path or logging setting; this project's CLI takes paths as arguments" for k in (
        "output_root", "log_root", "cache_root", "model_load_path", "model_load_source", "resume", "model_url",
        "model_config", "exp_name", "task_name", "config", "raw_config_path", "data_scale", "log_dir",
        "expected_output_dir")},
    **{k: "training infrastructure (Lightning/deepspeed, GPUs, loaders); `robovlm train` sets its own" for k in (
        "trainer", "gpus", "num_nodes", "num_workers", "seed", "batch_size", "learning_rate", "min_lr_scale",
        "weight_decay", "warmup_epochs", "warmup_steps", "warmup_ratio", "optimizer", "max_epochs",
        "gradient_clip_val", "accumulate_grad_batches", "precision", "strategy", "use_distributed_sampler")},
    **{k: "data set definition; `robovlm train --data` reads the user's episodes" for k in (
        "train_dataset", "val_dataset", "task_name", "dataset")},
    **{k: "action normalization comes from the data (per-dimension range in stats.json)" for k in (
        "norm_action", "norm_min", "norm_max", "regular_action", "x_mean", "x_std")},
    **{k: "loss weight of a head this model does not have (gripper logits, caption, forward prediction)" for k in (
        "arm_gripper_loss_ratio", "cap_loss_ratio", "fwd_loss_ratio")},
    "robovlm_name": "class name; the backbone is chosen by 'model'/'vlm.name'",
    "use_obs_queries": "applies to RoboVLMs' interleaved history formats; the 'post' format used here has none",
    "vision_masked_ratio": "only used by the MIM observation loss, which is off",
    "use_tube_mask": "only used by the MIM observation loss, which is off",
}

_TRAIN_SETUP_REFUSE = {  # train_setup keys that add heads or change the architecture when true
    "predict_forward": "future-frame prediction head",
    "predict_forward_hand": "future hand-frame prediction head",
    "predict_caption": "caption head",
    "lora_enable": "LoRA adapters",
    "use_spatial_injector": "FALCON spatial injector",
}


@dataclass
class ImportReport:
    mapped: list[tuple[str, str]] = field(default_factory=list)
    ignored: list[tuple[str, str]] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)

    def format(self) -> str:
        lines = [f"mapped ({len(self.mapped)}):"] + [f"  {k} -> {v}" for k, v in self.mapped]
        lines += [f"ignored ({len(self.ignored)}):"] + [f"  {k}: {v}" for k, v in self.ignored]
        if self.refused:
            lines += [f"refused ({len(self.refused)}):"] + [f"  {k}: {v}" for k, v in self.refused]
        return "\n".join(lines)


class ImportRefused(ConfigError):
    """The RoboVLMs config uses model features this project does not support."""

    def __init__(self, report: ImportReport) -> None:
        reasons = "; ".join(f"{k}: {v}" for k, v in report.refused)
        super().__init__(f"cannot import: {len(report.refused)} key(s) would change the model in unsupported "
                         f"ways: {reasons}")
        self.report = report


def import_robovlms_config(src: dict[str, Any], *, backbone_path: str | None = None,
                           clip_path: str | None = None) -> tuple[RoboVLMConfig, ImportReport]:
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
            rep.refused.append(("vlm.pretrained_model_name_or_path", "no local backbone directory; pass --backbone-path"))
        out["backbone"] = backbone
        mapped("model/vlm", "backbone", backbone)
    for key in ("model", "vlm", "model_path", "tokenizer"):
        if key in src:
            rep.ignored.append((key, "read into 'backbone' above"))

    for key in ("image_size", "window_size", "fwd_pred_next_n", "use_hand_rgb", "use_vision_resampler",
                "use_clip_norm", "use_state"):
        if key in src and src[key] is not None:
            out[key] = src[key]
            mapped(key, key, src[key])
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
    if "train_setup" in src:
        rep.ignored.append(("train_setup", "freezing, precision and learning-rate choices belong to `robovlm train`"))

    handled = {"vlm", "model", "model_path", "tokenizer", "image_size", "window_size", "fwd_pred_next_n",
               "use_hand_rgb", "use_vision_resampler", "use_clip_norm", "use_state", "clip_norm_ratio",
               "vision_resampler", "act_head", "act_encoder", "fwd_head", "use_mim_obs_loss", "use_time_causal_attn",
               "train_setup"}
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
        rep.refused.append(("act_head.history_type", f"{head['history_type']!r}: only 'post' (per-frame VLM, "
                                                     "history in the head)"))
    if head.get("with_history") is False:
        rep.ignored.append(("act_head.with_history", "false: use window_size 1 for a history-free policy"))
    if head.get("down_sample", "none") != "none":
        rep.refused.append(("act_head.down_sample", f"{head['down_sample']!r}: only one action token per frame"))
    if head.get("latent", 1) != 1:
        rep.refused.append(("act_head.latent", f"{head['latent']!r}: only one action token per frame"))
    for key in ("fwd_pred_next_n", "window_size"):
        if key in head:
            rep.ignored.append((f"act_head.{key}", "inherited from the top-level key"))
    known = {"type", "hidden_size", "num_layers", "policy_rnn_dropout_p", "action_dim", "action_space",
             "history_type", "with_history", "down_sample", "latent", "fwd_pred_next_n", "window_size"}
    for key in set(head) - known:
        rep.ignored.append((f"act_head.{key}", "head option without an equivalent here"))
