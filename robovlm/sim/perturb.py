"""Randomized appearance and dynamics: the room, the mounts, the camera and the base of a real robot.

A policy that only ever saw one evenly lit, flat-coloured room drives nowhere else. ``Perturbation`` holds the ranges
of each knob (``none`` is today's world bit for bit, ``mild`` and ``strong`` the documented levels); per episode,
``sample_appearance`` draws the room and the camera mounts from them (MJCF: ``world.build_mjcf``), and
``FrameEffects`` the per-frame camera faults (noise, motion blur, dropped frames). The dynamics knobs (velocity
tracking lag, wheel slip) are applied by ``CupWorldEnv``. Every draw comes from the episode's seed, on a stream
of its own, so the layout of a seed is the same at every level.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np


@dataclass(frozen=True)
class Perturbation:
    """Ranges, drawn uniformly per episode (per frame for noise, blur and drops). Every knob at its default: off."""

    light_intensity: tuple[float, float] = (1.0, 1.0)
    """Factor on the main light's brightness (0.4: a dim room)."""
    light_tilt_deg: float = 0.0
    """The main light's direction tilted from straight down by up to this, in a random direction."""
    light_tint: float = 0.0
    """Each colour channel of the light scaled by a factor in ``[1 - tint, 1 + tint]`` (warm or cold light)."""
    textures: bool = False
    """Textured floor (tiles or wood-like grain), boxes (printed cardboard) and cup, colours drawn per episode."""
    camera_position_m: float = 0.0
    """Each camera's mount offset by up to this along each axis."""
    camera_angle_deg: float = 0.0
    """Each camera's mount rotated by up to this about a random axis."""
    noise_std: float = 0.0
    """Standard deviation of Gaussian pixel noise, in 0-255 units."""
    blur_px: float = 0.0
    """Motion blur up to this many pixels long, in a random direction per frame."""
    drop_probability: float = 0.0
    """Chance that a frame is dropped (the camera delivers nothing new; the last frame stays)."""
    velocity_lag_s: float = 0.0
    """Time constant of the base's first-order lag in tracking the commanded velocity."""
    wheel_slip: float = 0.0
    """Velocity lost to slip: up to this fraction per axis per episode, plus noise of a third of it per step."""

    def __post_init__(self) -> None:
        lo, hi = self.light_intensity
        if not (0 < lo <= hi and math.isfinite(hi)):
            raise ValueError(f"light_intensity must be (low, high) with 0 < low <= high, got {self.light_intensity}")
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{f.name} must be a finite number >= 0, got {value}")
        for name in ("light_tint", "drop_probability", "wheel_slip"):
            if getattr(self, name) >= 1:
                raise ValueError(f"{name} must be < 1, got {getattr(self, name)}")

    @property
    def is_none(self) -> bool:
        return self == Perturbation()


LEVELS: dict[str, Perturbation] = {
    "none": Perturbation(),
    "mild": Perturbation(
        light_intensity=(0.7, 1.3),
        light_tilt_deg=20.0,
        light_tint=0.1,
        textures=True,
        camera_position_m=0.01,
        camera_angle_deg=2.0,
        noise_std=3.0,
        blur_px=2.0,
        drop_probability=0.02,
        velocity_lag_s=0.05,
        wheel_slip=0.05,
    ),
    "strong": Perturbation(
        light_intensity=(0.4, 1.6),
        light_tilt_deg=45.0,
        light_tint=0.25,
        textures=True,
        camera_position_m=0.03,
        camera_angle_deg=5.0,
        noise_std=8.0,
        blur_px=4.0,
        drop_probability=0.1,
        velocity_lag_s=0.15,
        wheel_slip=0.15,
    ),
}


def level(name: str) -> Perturbation:
    if name not in LEVELS:
        raise ValueError(f"perturb must be one of {list(LEVELS)}, got {name!r}")
    return LEVELS[name]


@dataclass(frozen=True)
class CameraMount:
    pos: tuple[float, float, float]
    xyaxes: tuple[float, float, float, float, float, float]


@dataclass(frozen=True)
class Appearance:
    """One episode's room and mounts, as ``world.build_mjcf`` writes them."""

    light_diffuse: tuple[float, float, float]
    light_dir: tuple[float, float, float]
    textures: tuple[tuple[float, ...], ...] | None
    """Second colours of the floor, box and cup textures (their first is the layout's colour), or None: flat."""
    floor_builtin: str
    head: CameraMount
    hand: CameraMount


HEAD_MOUNT = CameraMount((-0.05, 0.0, 0.55), (0.0, -1.0, 0.0, 0.45, 0.0, 0.89))
HAND_MOUNT = CameraMount((0.09, 0.0, 0.03), (0.0, -1.0, 0.0, 0.6, 0.0, 0.8))
LIGHT_DIFFUSE = 0.8


def _rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    axis = axis / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * k @ k


def _jitter_mount(mount: CameraMount, p: Perturbation, rng: np.random.Generator) -> CameraMount:
    pos = np.asarray(mount.pos) + rng.uniform(-p.camera_position_m, p.camera_position_m, 3)
    rot = _rotation(rng.normal(size=3), math.radians(rng.uniform(0, p.camera_angle_deg)))
    axes = np.asarray(mount.xyaxes).reshape(2, 3) @ rot.T
    return CameraMount(
        tuple(float(v) for v in pos),  # type: ignore[arg-type]
        tuple(float(v) for v in axes.ravel()),  # type: ignore[arg-type]
    )


def sample_appearance(p: Perturbation, seed: int) -> Appearance | None:
    """The room of episode ``seed`` under ``p``; None for ``none`` (today's world)."""
    if p.is_none:
        return None
    rng = np.random.default_rng([seed, 0xA11])
    gain = rng.uniform(*p.light_intensity) * LIGHT_DIFFUSE
    tint = rng.uniform(1 - p.light_tint, 1 + p.light_tint, 3)
    tilt, heading = math.radians(rng.uniform(0, p.light_tilt_deg)), rng.uniform(0, 2 * math.pi)
    direction = (math.sin(tilt) * math.cos(heading), math.sin(tilt) * math.sin(heading), -math.cos(tilt))
    textures = None
    if p.textures:
        textures = tuple(tuple(float(c) for c in rng.uniform(0.2, 0.9, 3)) for _ in range(3))
    return Appearance(
        light_diffuse=tuple(float(np.clip(gain * t, 0, 1)) for t in tint),  # type: ignore[arg-type]
        light_dir=direction,
        textures=textures,
        floor_builtin=str(rng.choice(["checker", "gradient"])),
        head=_jitter_mount(HEAD_MOUNT, p, rng),
        hand=_jitter_mount(HAND_MOUNT, p, rng),
    )


class FrameEffects:
    """Per-frame camera faults of one episode: noise, motion blur, dropped frames (the last frame stays)."""

    def __init__(self, p: Perturbation, seed: int) -> None:
        self.p = p
        self._rng = np.random.default_rng([seed, 0xF4A])
        self._last: dict[str, np.ndarray] = {}

    def apply(self, camera: str, frame: np.ndarray) -> tuple[np.ndarray, bool]:
        """(H, W, 3) uint8 -> the frame the robot receives, and whether this one was dropped."""
        if self.p.is_none:
            return frame, False
        if camera in self._last and self._rng.random() < self.p.drop_probability:
            return self._last[camera], True
        out = frame.astype(np.float32)
        if self.p.blur_px > 0:
            out = motion_blur(out, self._rng.uniform(0, self.p.blur_px), self._rng.uniform(0, math.pi))
        if self.p.noise_std > 0:
            out += self._rng.normal(0.0, self.p.noise_std, out.shape)
        result = np.clip(np.rint(out), 0, 255).astype(np.uint8)
        self._last[camera] = result
        return result, False


def motion_blur(frame: np.ndarray, length: float, angle: float) -> np.ndarray:
    """(H, W, C) float: the mean of the frame shifted along ``angle`` over ``length`` pixels (edges repeated)."""
    n = int(round(length))
    if n < 1:
        return frame
    h, w = frame.shape[:2]
    padded = np.pad(frame, ((n, n), (n, n), (0, 0)), mode="edge")
    acc = np.zeros_like(frame)
    for t in np.linspace(-n / 2, n / 2, n + 1):
        dy, dx = int(round(t * math.sin(angle))), int(round(t * math.cos(angle)))
        acc += padded[n + dy : n + dy + h, n + dx : n + dx + w]
    return acc / (n + 1)
