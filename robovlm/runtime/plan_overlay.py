"""The node's ``~/debug_image``: what the model saw, what it plans, and why the robot is held.

Left, the head camera frame as the model takes it (its input size, scaled up by whole pixels so it stays sharp);
right, a bird's-eye view in the robot's frame (forward up, left to the left, the robot at the centre): the plan
(``~/plan``, green, a dot per action) and the commands published over the last seconds (``~/executed``, blue).
Below, the instruction and the hold cause ("driving" when none). No camera calibration is assumed, so the plan is
drawn beside the frame rather than projected into it.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .safety import OPERATOR_CAUSE

PANEL = 256  # px: the frame and the bird's-eye view are squares of this size
BAND = 34  # px: the text band below them
PLAN = (40, 200, 80)
EXECUTED = (70, 130, 230)
HELD = (220, 50, 40)
DRIVING = (30, 150, 60)


@functools.cache
def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's own font at 13 px (Pillow 10.1 and later; the older bitmap font otherwise), decoded once."""
    try:
        return ImageFont.load_default(size=13)
    except TypeError:
        return ImageFont.load_default()


def _view_scale(paths: list[np.ndarray]) -> tuple[float, float]:
    """Pixels per metre and the radius in metres the view shows: the paths fit with a margin, at least 0.5 m."""
    extent = max([float(np.abs(p[:, :2]).max()) for p in paths if len(p)] + [0.0])
    radius = max(0.5, 1.2 * extent)
    return 0.45 * PANEL / radius, radius


def _to_px(poses: np.ndarray, ppm: float, x0: int) -> list[tuple[float, float]]:
    """Robot-frame (x forward, y left) metres -> panel pixels, robot at the panel's centre."""
    cx, cy = x0 + PANEL / 2, PANEL / 2
    return [(cx - y * ppm, cy - x * ppm) for x, y in poses[:, :2]]


def _fit(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont, width: int) -> str:
    """``text`` cut with an ellipsis to fit ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


def draw_overlay(
    frame: np.ndarray | None,
    plan: np.ndarray,
    executed: np.ndarray,
    *,
    instruction: str,
    hold_cause: str | None,
) -> np.ndarray:
    """(S, S, 3) uint8 head frame (None: not received yet), (N, 3) plan and (M, 3) executed poses (x, y, yaw in the
    robot's frame, metres and radians) -> (PANEL + BAND, 2 * PANEL, 3) uint8 RGB."""
    canvas = Image.new("RGB", (2 * PANEL, PANEL + BAND), (255, 255, 255))
    if frame is not None:
        scale = max(1, PANEL // max(frame.shape[:2]))
        img = Image.fromarray(np.ascontiguousarray(frame[..., :3], dtype=np.uint8))
        img = img.resize((frame.shape[1] * scale, frame.shape[0] * scale), Image.Resampling.NEAREST)
        img = img.resize((PANEL, PANEL), Image.Resampling.BILINEAR) if img.size != (PANEL, PANEL) else img
        canvas.paste(img, (0, 0))
    draw = ImageDraw.Draw(canvas)
    font = _font()
    if frame is None:
        draw.rectangle((0, 0, PANEL - 1, PANEL - 1), fill=(60, 60, 60))
        draw.text((8, PANEL / 2 - 6), "no head camera frame yet", fill=(255, 255, 255), font=font)

    ppm, radius = _view_scale([plan, executed])
    cx, cy = PANEL + PANEL / 2, PANEL / 2
    draw.rectangle((PANEL, 0, 2 * PANEL - 1, PANEL - 1), fill=(245, 245, 245), outline=(200, 200, 200))
    ring = 10 ** math.floor(math.log10(radius))  # rings every 0.1 / 1 / 10 m, whichever fits a few
    for k in range(1, int(radius / ring) + 1):
        r = k * ring * ppm
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=(215, 215, 215))
    draw.text((PANEL + 6, 4), f"rings every {ring:g} m", fill=(120, 120, 120), font=font)
    if len(executed) > 1:
        draw.line(_to_px(executed, ppm, PANEL), fill=EXECUTED, width=3)
    if len(plan) > 1:
        pts = _to_px(plan, ppm, PANEL)
        draw.line(pts, fill=PLAN, width=3)
        for px, py in pts[1:]:
            draw.ellipse((px - 2.5, py - 2.5, px + 2.5, py + 2.5), fill=PLAN)
    draw.polygon([(cx, cy - 9), (cx - 6, cy + 6), (cx + 6, cy + 6)], fill=(40, 40, 40))  # the robot, facing up
    draw.text((PANEL + 6, PANEL - 16), "plan", fill=PLAN, font=font)
    draw.text((PANEL + 44, PANEL - 16), "executed", fill=EXECUTED, font=font)

    text = _fit(draw, instruction or "(no instruction)", font, 2 * PANEL - 12)
    draw.text((6, PANEL + 2), text, fill=(0, 0, 0), font=font)
    status = "driving" if hold_cause is None else f"held: {hold_cause}"
    if hold_cause == OPERATOR_CAUSE:
        status = "the operator has the robot"
    draw.text((6, PANEL + 17), status, fill=DRIVING if hold_cause is None else HELD, font=font)
    return np.asarray(canvas)
