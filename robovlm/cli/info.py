"""``robovlm info``: parameters per module and tokens per stage of a config or checkpoint"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``info`` to the ``robovlm`` command line."""
    s = sub.add_parser("info", help="parameters per module and tokens per stage of a config or checkpoint")
    s.add_argument("target", help="config JSON or checkpoint directory")
    s.add_argument("--instruction", default="go around the box to the cup")
    s.set_defaults(func=cmd_info)


def _load_any(target: str, *, meta: bool):
    """A checkpoint directory (weights loaded) or a config file (architecture only, on the meta device if asked)."""
    import torch

    from ..configs.model import load_config
    from ..model.policy import RoboVLM
    from ..model.tokenizer import ByteTokenizer, load_tokenizer

    path = Path(target)
    if path.is_dir() and (path / "model.safetensors").exists():
        return RoboVLM.from_pretrained(path), f"checkpoint {path}", None
    cfg = load_config(path)
    tok_note = None
    try:
        tokenizer = load_tokenizer(cfg.backbone.tokenizer, cfg.backbone.path)
    except (FileNotFoundError, ValueError) as exc:
        tokenizer, tok_note = ByteTokenizer(), f"unknown (tokenizer not available: {exc})"
    if meta:
        with torch.device("meta"):
            model = RoboVLM(cfg, tokenizer=tokenizer, load_backbone_weights=False)
    else:
        model = RoboVLM(cfg, tokenizer=tokenizer)
    return model, f"config {path} (architecture only, weights not loaded)", tok_note


def module_parameter_counts(model) -> list[tuple[str, int, bool]]:
    """(name, parameters, trainable) per module, with the backbone split into its parts."""
    rows: list[tuple[str, int, bool]] = []
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    bb = model.backbone
    if bb.type == "kosmos2":
        parts = [
            ("backbone.vision_encoder", bb.model.vision_model),
            ("backbone.projector", bb.model.image_to_text_projection),
            ("backbone.language_model", bb.model.text_model),
        ]
    else:
        parts = [
            ("backbone.vision_encoder", bb.model.vision_tower),
            ("backbone.projector", bb.model.multi_modal_projector),
            ("backbone.language_model", bb.model.language_model),
        ]
    used_native = not model.config.use_vision_resampler
    for name, mod in parts:
        rows.append(
            (
                name + ("" if used_native or name != "backbone.projector" else " (unused: resampler on)"),
                count(mod),
                True,
            )
        )
    for name, mod in model.named_children():
        if name == "backbone":
            continue
        if name == "clip_norm":
            rows.append(("clip_norm.proj", count(mod.proj), True))
            rows.append(("clip_norm.text_encoder (frozen)", count(mod.text_encoder), False))
            continue
        rows.append((name, count(mod), True))
    for name, p in model.named_parameters(recurse=False):
        rows.append((name, p.numel(), True))
    return rows


def cmd_info(args: argparse.Namespace) -> int:
    model, what, tok_note = _load_any(args.target, meta=True)
    cfg = model.config
    print(f"RoboVLM {what}")
    print(
        f"backbone: {cfg.backbone.type}; LM width {model.dim}; vision width {model.backbone.vision_width}; "
        f"image {cfg.image_size} px"
    )
    print(
        f"features: resampler={cfg.use_vision_resampler} hand_rgb={cfg.use_hand_rgb} state={cfg.use_state} "
        f"clip_norm={cfg.use_clip_norm} claw_matrix={cfg.use_claw_matrix} hierarchical={cfg.use_hierarchical} "
        f"advanced_attention={cfg.use_advanced_attention} head={cfg.act_head.type}"
    )
    print("\nparameters per module:")
    rows = module_parameter_counts(model)
    width = max(len(r[0]) for r in rows)
    for name, n, _ in rows:
        print(f"  {name:<{width}}  {n:>15,d}")
    print(f"  {'total':<{width}}  {sum(r[1] for r in rows):>15,d}")
    counts = model.token_counts(args.instruction)
    if tok_note:
        counts["instruction_tokens"] = tok_note
        counts["lm_sequence"] = f"{model.tokens_per_frame} + instruction tokens"
    print(f"\ntokens per stage (instruction: {args.instruction!r}):")
    print(f"  vision encoder: {counts['patch_tokens_per_camera']} patch tokens per camera")
    via = "resampler" if cfg.use_vision_resampler else "backbone projector"
    print(f"  after {via}: {counts['vision_tokens_per_camera']} tokens per camera x {counts['cameras']} camera(s)")
    print(f"  state: {counts['state_tokens']}, action (LRN): {counts['action_tokens']}")
    print(
        f"  per frame into the LM: {counts['frame_tokens']} (+ instruction {counts['instruction_tokens']}, "
        "computed once per instruction)"
    )
    print(f"  LM sequence per frame: {counts['lm_sequence']}")
    print(f"  policy head: window {cfg.window_size} -> chunk ({cfg.fwd_pred_next_n}, {cfg.action_dim})")
    return 0
