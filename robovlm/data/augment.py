"""Training-time image augmentation: the camera shift and the light of a room the recordings never saw.

Drawn once per window (a window is a fraction of a second of one room) and applied to every frame of it: a random
shift of up to ``shift`` pixels per camera (each camera its own mount's jitter), then, for both cameras alike,
brightness, contrast and per-channel gain within ``light`` (a dim, bright, warm or cold room; ``robovlm.sim.perturb``
shows the robot such rooms), then Gaussian pixel noise of a standard deviation drawn up to ``noise`` (0-255 units).
The draws come in a fixed order (each camera's shift first), so a recipe with only ``shift`` draws what it drew
before ``light`` and ``noise`` existed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ImageAugment:
    shift: int = 0
    """Largest camera shift in pixels (edges repeated)."""
    light: float = 0.0
    """Brightness factor in ``[1 - light, 1 + light]``, contrast in ``[1 - light / 2, 1 + light / 2]``, each channel's
    gain in ``[1 - light / 3, 1 + light / 3]``."""
    noise: float = 0.0
    """Largest standard deviation of the pixel noise, in 0-255 units."""

    def __post_init__(self) -> None:
        if self.shift < 0:
            raise ValueError(f"shift must be >= 0, got {self.shift}")
        if not (math.isfinite(self.light) and 0 <= self.light < 1):
            raise ValueError(f"light must be in [0, 1), got {self.light}")
        if not (math.isfinite(self.noise) and self.noise >= 0):
            raise ValueError(f"noise must be a finite number >= 0, got {self.noise}")

    @property
    def active(self) -> bool:
        return self.shift > 0 or self.light > 0 or self.noise > 0

    def draw(self, rng: np.random.Generator, cameras: int) -> WindowAugment:
        """The augmentation of one window of ``cameras`` cameras."""
        shifts = (
            tuple((int(d[0]), int(d[1])) for d in (rng.integers(0, 2 * self.shift + 1, size=2) for _ in range(cameras)))
            if self.shift
            else ((0, 0),) * cameras
        )
        if self.light > 0:
            brightness = float(rng.uniform(1 - self.light, 1 + self.light))
            contrast = float(rng.uniform(1 - self.light / 2, 1 + self.light / 2))
            gain = rng.uniform(1 - self.light / 3, 1 + self.light / 3, 3).astype(np.float32)
        else:
            brightness, contrast, gain = 1.0, 1.0, np.ones(3, np.float32)
        noise = float(rng.uniform(0, self.noise)) if self.noise > 0 else 0.0
        seed = int(rng.integers(2**31)) if noise > 0 else 0
        return WindowAugment(self.shift, shifts, brightness, contrast, gain, noise, seed)


@dataclass(frozen=True)
class WindowAugment:
    pad: int
    shifts: tuple[tuple[int, int], ...]
    """(dy, dx) per camera, in ``[0, 2 * pad]``."""
    brightness: float
    contrast: float
    gain: np.ndarray
    noise: float
    noise_seed: int

    def __call__(self, frames: np.ndarray, camera: int) -> np.ndarray:
        """(T, H, W, 3) uint8 frames of camera ``camera`` -> (T, H, W, 3) uint8."""
        if self.pad:
            p, (dy, dx) = self.pad, self.shifts[camera]
            padded = np.pad(frames, ((0, 0), (p, p), (p, p), (0, 0)), mode="edge")
            frames = padded[:, dy : dy + frames.shape[1], dx : dx + frames.shape[2]]
        if self.brightness == 1.0 and self.contrast == 1.0 and self.noise == 0.0 and np.all(self.gain == 1.0):
            return np.ascontiguousarray(frames)
        x = frames.astype(np.float32)
        mean = x.mean(axis=(1, 2, 3), keepdims=True)  # (T, 1, 1, 1)
        x = ((x - mean) * self.contrast + mean) * self.brightness * self.gain
        if self.noise > 0:
            x += np.random.default_rng([self.noise_seed, camera]).normal(0.0, self.noise, x.shape).astype(np.float32)
        return np.clip(np.rint(x), 0, 255).astype(np.uint8)
