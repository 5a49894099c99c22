"""Fine-tuning modes (``config.train_setup``): frozen vision encoder or language model, LoRA adapters through
``peft``, gradient checkpointing, and what a checkpoint of such a model holds.

LoRA checkpoints are merged at save (``merged_state_dict``): ``model.safetensors`` holds ``W + alpha/r * B @ A``
under the base layer's own name, so ``RoboVLM.from_pretrained``, both engines and ``robovlm export`` load it like
any other checkpoint, with no peft at inference and no adapter latency. The unmerged base weights and adapters are
in the trainer's state (``train_state/``, written by accelerate) for an exact resume.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from ..model.held_weights import hold_frozen_weights
from ..model.lora import ADAPTER
from ..model.policy import RoboVLM
from ..utils.memory import keep_large_blocks_unmapped

log = logging.getLogger(__name__)

DEFAULT_TARGETS = {
    "kosmos2": ["q_proj", "k_proj", "v_proj", "out_proj"],
    "paligemma": ["q_proj", "k_proj", "v_proj", "o_proj", "out_proj"],
}


def backbone_parts(model: RoboVLM) -> dict[str, nn.Module]:
    """The backbone's vision encoder, projector and language model by name."""
    bb = model.backbone
    if bb.type == "kosmos2":
        return {
            "vision": bb.model.vision_model,
            "projector": bb.model.image_to_text_projection,
            "language": bb.model.text_model,
        }
    return {
        "vision": bb.model.vision_tower,
        "projector": bb.model.multi_modal_projector,
        "language": bb.model.language_model,
    }


def apply_train_setup(model: RoboVLM) -> None:
    """Freeze, add LoRA adapters and turn on gradient checkpointing as ``model.config.train_setup`` says."""
    ts = model.config.train_setup
    parts = backbone_parts(model)
    if ts.freeze_vision:
        parts["vision"].requires_grad_(False)
    if ts.freeze_language:
        parts["language"].requires_grad_(False)
    if ts.lora is not None:
        import peft

        targets = ts.lora.target_modules or DEFAULT_TARGETS[model.backbone.type]
        config = peft.LoraConfig(
            r=ts.lora.r, lora_alpha=ts.lora.alpha, lora_dropout=ts.lora.dropout, target_modules=targets
        )
        for name in ("language", "vision") if ts.lora.vision else ("language",):
            parts[name].requires_grad_(False)  # the base stays as loaded; only the adapters train
            try:
                peft.inject_adapter_in_model(config, parts[name], adapter_name=ADAPTER)
            except ValueError as exc:  # peft: no module matched target_modules
                raise ValueError(
                    f"train_setup.lora.target_modules {targets} match no layer of the {name} model: {exc}"
                ) from exc
    if ts.frozen_dtype != "float32":
        hold_frozen_in(model, getattr(torch, ts.frozen_dtype))
    if ts.gradient_checkpointing:
        hf = model.backbone.model
        if hasattr(hf, "activation_checkpointing_enable"):  # transformers >= 5.x name
            hf.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            hf.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def hold_frozen_in(model: RoboVLM, dtype: torch.dtype) -> int:
    """Hold the backbone's frozen weights (LoRA base layers, frozen encoders) in ``dtype``, computed in fp32
    (``model.held_weights``: on a CPU without bf16 instructions bf16 compute is ~5x slower, the cast is free).
    Trainable parameters, norms and the policy's modules stay fp32. Returns the bytes the held weights take."""
    held = sum(hold_frozen_weights(part, dtype) for part in backbone_parts(model).values())
    keep_large_blocks_unmapped()  # the freed fp32 copies and each step's casts would otherwise stay resident
    log.info("frozen backbone weights held in %s: %.2f GiB", dtype, held / 2**30)
    return held


def parameter_table(model: RoboVLM) -> list[tuple[str, int, int]]:
    """(module, parameters, trainable) for the backbone's parts and every policy module."""
    rows = []

    def count(m, only_trainable):
        return sum(
            p.numel()
            for p in m.parameters()  # noqa: E731
            if p.requires_grad or not only_trainable
        )

    for name, part in backbone_parts(model).items():
        rows.append((f"backbone.{name}", count(part, False), count(part, True)))
    for name, mod in model.named_children():
        if name == "backbone":
            continue
        if name == "clip_norm":
            mod = mod.proj  # the frozen CLIP encoder is never trained
        rows.append((name, count(mod, False), count(mod, True)))
    for name, p in model.named_parameters(recurse=False):
        rows.append((name, p.numel(), p.numel() if p.requires_grad else 0))
    return rows


def format_parameter_table(model: RoboVLM) -> str:
    rows = parameter_table(model)
    total, trainable = sum(r[1] for r in rows), sum(r[2] for r in rows)
    width = max(len(r[0]) for r in rows)
    lines = [f"{'module':<{width}}  {'parameters':>13}  {'trainable':>13}"]
    lines += [f"{n:<{width}}  {a:>13,}  {t:>13,}" for n, a, t in rows]
    lines.append(f"{'total':<{width}}  {total:>13,}  {trainable:>13,} ({100 * trainable / max(total, 1):.2f}%)")
    return "\n".join(lines)
