"""``robovlm demo``: the real model code path, step by step, on synthetic camera frames.

The model has random weights (UNTRAINED): the printed actions show that every stage runs and what shapes flow
between stages, not behaviour. Frames are drawn procedurally (a floor, a box and a cup that drift as if the base
moved), so nothing is downloaded.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from ..configs.model import load_config
from ..model.policy import RoboVLM
from ..utils.images import to_pixels
from ..utils.resources import find_resource

DEFAULT_CONFIG = ("models", "configs", "kosmos2_small.json")  # looked up with robovlm.utils.resources


def synthetic_frame(t: int, *, hand: bool, height: int = 240, width: int = 320) -> np.ndarray:
    """An RGB uint8 (H, W, 3) view: floor gradient, a brown box and a red cup drifting with ``t``."""
    yy, xx = np.mgrid[0:height, 0:width]
    img = np.empty((height, width, 3), np.uint8)
    img[..., 0] = 90 + (yy * 60 // height)
    img[..., 1] = 100 + (yy * 50 // height)
    img[..., 2] = 110 + (xx * 40 // width)
    scale = 2.0 if hand else 1.0
    bx, by = int(width * 0.35 + 4 * t * scale), int(height * 0.55)
    bw, bh = int(60 * scale), int(45 * scale)
    img[max(by - bh, 0) : by, max(bx - bw // 2, 0) : bx + bw // 2] = (150, 105, 60)
    cx, cy, r = int(width * 0.7 - 3 * t * scale), int(height * 0.45), int(14 * scale)
    img[(xx - cx) ** 2 + (yy - cy) ** 2 <= r * r] = (200, 30, 40)
    return img


def _shape(x: torch.Tensor) -> str:
    return "(" + ", ".join(str(s) for s in x.shape) + ")"


def run_demo(*, config_path: str | None, steps: int, instruction: str, seed: int) -> int:
    torch.manual_seed(seed)
    path = Path(config_path) if config_path else find_resource(*DEFAULT_CONFIG)
    cfg = load_config(path)
    print("RoboVLM demo -- UNTRAINED model (random weights) on synthetic frames.")
    print("It runs the real code path stage by stage; the actions it prints mean nothing yet.\n")
    t0 = time.perf_counter()
    model = RoboVLM(cfg, with_clip=False).eval()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"config: {path}")
    print(
        f"built {cfg.backbone.type} RoboVLM with {n_params / 1e6:.1f} M parameters in {time.perf_counter() - t0:.1f} s"
    )
    print(f"instruction: {instruction!r}\n")

    norm = dict(size=cfg.image_size, mean=cfg.image_mean, std=cfg.image_std)
    state_raw = np.zeros(cfg.state_dim, np.float32)

    with torch.inference_mode():
        head_img, hand_img = synthetic_frame(0, hand=False), synthetic_frame(0, hand=True)
        head = to_pixels(head_img, **norm)
        hand = to_pixels(hand_img, **norm)
        patches = model.backbone.encode_image(head)
        print("stages of one frame:")
        print(f"  head camera frame            {head_img.shape} uint8 RGB (hand camera the same)")
        print(f"  preprocess                   {_shape(head)} resized to {cfg.image_size} px, normalized")
        print(f"  vision encoder               {_shape(patches)} patch tokens")
        if cfg.use_vision_resampler:
            lat = model.resampler(patches)
            print(f"  perceiver resampler          {_shape(lat)} latents (depth {cfg.vision_resampler.depth})")
            print(f"  projector to LM width        {_shape(model.vision_projector(lat))}")
        else:
            print(f"  backbone projector           {_shape(model.backbone.project_native(patches))}")
        state = torch.from_numpy(model.stats.normalize_state(state_raw)).unsqueeze(0)
        frame = model._frame_embeds(head, hand if cfg.use_hand_rgb else None, None, state)
        layout = f"[head {model.tokens_per_camera}]" + (f"[hand {model.tokens_per_camera}]" if cfg.use_hand_rgb else "")
        layout += "[state 1]" if cfg.use_state else ""
        print(f"  frame tokens into the LM     {_shape(frame)} {layout}[LRN 1]")
        ids, _ = model._prefix([instruction])
        print(f"  instruction tokens           {_shape(ids)} keys/values computed once, reused every step")
        print(
            f"  policy head                  window of up to {cfg.window_size} LRN features -> "
            f"chunk ({cfg.fwd_pred_next_n}, {cfg.action_dim})\n"
        )

        fields = model.stats.action_fields
        print(f"{'step':>4}  {'latency ms':>10}  {'window':>6}  first action ({', '.join(fields)}) [stats units]")
        model.reset()
        latencies = []
        for t in range(steps):
            head = to_pixels(synthetic_frame(t, hand=False), **norm)
            hand = to_pixels(synthetic_frame(t, hand=True), **norm) if cfg.use_hand_rgb else None
            state_raw = np.sin(0.3 * t + np.arange(cfg.state_dim, dtype=np.float32)).astype(np.float32)
            state = torch.from_numpy(model.stats.normalize_state(state_raw)).unsqueeze(0)
            s = time.perf_counter()
            chunk = model.step(head, hand, state, instruction)  # (1, n, A)
            latencies.append(time.perf_counter() - s)
            act = model.stats.unnormalize_action(chunk[0].numpy())
            print(
                f"{t:>4}  {latencies[-1] * 1e3:>10.1f}  {len(model._window):>6}  "
                + "  ".join(f"{v:+.3f}" for v in act[0])
            )
        print(f"\nlast action chunk ({cfg.fwd_pred_next_n} x {cfg.action_dim}, physical units):")
        for i, row in enumerate(act):
            print(f"  t+{i:<2} " + "  ".join(f"{v:+.3f}" for v in row))
    lat = np.array(latencies[1:] or latencies) * 1e3
    print(
        f"\nstep latency after the first step: median {np.median(lat):.1f} ms, max {lat.max():.1f} ms "
        f"(first step, which also encodes the instruction: {latencies[0] * 1e3:.1f} ms)"
    )
    print("UNTRAINED: train a model before trusting any of these numbers.")
    return 0
