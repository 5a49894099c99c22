"""Camera frames -> model pixels: RGB uint8 (H, W, 3) -> normalized float (3, S, S), resized bicubic like CLIP."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class ImageError(ValueError):
    """A camera frame has the wrong shape, dtype or values."""


def to_pixels(images: np.ndarray | torch.Tensor, *, size: int, mean: tuple[float, float, float],
              std: tuple[float, float, float]) -> torch.Tensor:
    """(H, W, 3) or (B, H, W, 3) RGB uint8 -> (B, 3, size, size) float32, normalized with ``mean``/``std``."""
    x = torch.as_tensor(np.asarray(images)) if isinstance(images, np.ndarray) else images
    if x.ndim == 3:
        x = x.unsqueeze(0)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ImageError(f"expected RGB images (H, W, 3) or (B, H, W, 3), got shape {tuple(x.shape)}")
    if x.dtype != torch.uint8:
        raise ImageError(f"expected uint8 pixels, got {x.dtype}")
    if x.shape[1] < 2 or x.shape[2] < 2:
        raise ImageError(f"image too small: {tuple(x.shape[1:3])}")
    x = x.permute(0, 3, 1, 2).float().div_(255.0)  # (B, 3, H, W)
    if x.shape[-2:] != (size, size):
        x = nn.functional.interpolate(x, size=(size, size), mode="bicubic", align_corners=False,
                                      antialias=True).clamp_(0.0, 1.0)
    m = torch.tensor(mean, dtype=x.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - m) / s
