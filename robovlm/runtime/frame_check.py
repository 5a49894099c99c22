"""Is a camera frame worth driving on? (no ROS here; the node feeds it sizes and frames.)

A decodable frame can still carry nothing the policy can use, and a policy fed one does not stop by itself: it
keeps predicting velocities (0.26-0.35 m/s measured on the demo policy for a 1x1 frame, an all-black and an
all-white frame). The cases a robot meets:
- a frame too small for the model (a misconfigured driver, a thumbnail topic): upscaling invents the picture;
- a frame of one colour (a covered lens, a lens cap, a dead sensor, a driver that sends zeros);
- a frame mostly clipped to black or white (a blown exposure, a lamp into the lens, a dark room at minimum gain).
The checks run on the frame at the model's input size (a few thousand pixels), once per frame the model would use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

FRAME_FAULTS = ("image_too_small", "blank_image", "saturated_image")
CLIP_LOW, CLIP_HIGH = 4, 251
"""A pixel is clipped when every channel is at most ``CLIP_LOW`` (black) or at least ``CLIP_HIGH`` (white)."""


@dataclass(frozen=True)
class FrameCheck:
    """Thresholds (node parameters ``min_image_side_px``, ``min_image_contrast``, ``max_saturated_fraction``)."""

    min_side_px: int = 32
    """A frame narrower or lower than this is refused (``image_too_small``)."""
    min_contrast: float = 2.0
    """Standard deviation of the luminance (0-255) below which a frame is one colour (``blank_image``); 0: off."""
    max_saturated_fraction: float = 0.95
    """Share of clipped pixels above which a frame is refused (``saturated_image``); 1: off."""

    def __post_init__(self) -> None:
        if self.min_side_px < 1:
            raise ValueError(f"min_side_px must be >= 1, got {self.min_side_px}")
        if not (math.isfinite(self.min_contrast) and self.min_contrast >= 0):
            raise ValueError(f"min_contrast must be finite and >= 0, got {self.min_contrast}")
        if not 0 < self.max_saturated_fraction <= 1:
            raise ValueError(f"max_saturated_fraction must be in (0, 1], got {self.max_saturated_fraction}")

    def size_fault(self, width: int, height: int) -> tuple[str, str] | None:
        """(cause, reason) when a ``width`` x ``height`` frame is too small for the model, else None."""
        if min(width, height) < self.min_side_px:
            return "image_too_small", (
                f"frame of {width}x{height} is smaller than min_image_side_px={self.min_side_px}"
            )
        return None

    def content_fault(self, rgb: np.ndarray) -> tuple[str, str] | None:
        """(cause, reason) when the (H, W, 3) uint8 frame is one colour or mostly clipped, else None."""
        luma = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)  # (H, W)
        contrast = float(luma.std())
        if contrast < self.min_contrast:
            return "blank_image", (
                f"frame is one colour (luminance std {contrast:.2f} < min_image_contrast="
                f"{self.min_contrast:g}, mean {float(luma.mean()):.0f}): covered lens or dead "
                "sensor?"
            )
        if self.max_saturated_fraction < 1:
            low = (rgb <= CLIP_LOW).all(axis=-1)
            high = (rgb >= CLIP_HIGH).all(axis=-1)
            clipped = float((low | high).mean())
            if clipped > self.max_saturated_fraction:
                return "saturated_image", (
                    f"{clipped:.0%} of the frame is clipped to black or white (more than "
                    f"max_saturated_fraction={self.max_saturated_fraction:g}): exposure?"
                )
        return None
