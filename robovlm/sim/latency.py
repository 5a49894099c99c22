"""The node's inference loop in simulated time: camera and inference latency, frames skipped by a busy model.

A robot's chunk does not arrive when its frame was taken. The camera delivers a frame ``camera`` seconds after it
was captured (the frame keeps its capture stamp); the model starts on the newest frame it has as soon as it is free
and answers ``inference`` seconds later; frames that arrive while it runs, except the newest, are never seen
(``frames_skipped``). The chunk is stamped with its frame's capture time, so the scheduler indexes it as the node
does: actions already due when it arrives are skipped, not replayed. Jitter adds a uniform ``[0, jitter]`` to each
latency. With every latency 0, a frame's chunk is available at the frame's own time: today's synchronous loop.
A chunk's age on arrival is at least the two latencies; a frame that arrives while the model is busy waits for it
(up to one frame period in ``eval-sim``, whose cameras render at the control rate).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

from ..runtime.scheduler import ActionChunk

Frame = TypeVar("Frame")


@dataclass(frozen=True)
class LatencySettings:
    """Latency of one robot, in milliseconds (``robovlm eval-sim --inference-latency-ms ...``)."""

    inference_ms: float = 0.0
    """From the model starting on a frame to its chunk being available to the control loop."""
    camera_ms: float = 0.0
    """From a frame's capture to the model being able to read it."""
    jitter_ms: float = 0.0
    """Uniform ``[0, jitter_ms]`` added to each of the two, drawn per frame and per inference."""

    def __post_init__(self) -> None:
        for name in ("inference_ms", "camera_ms", "jitter_ms"):
            value = getattr(self, name)
            if not np.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")

    @property
    def zero(self) -> bool:
        return self.inference_ms == 0 and self.camera_ms == 0 and self.jitter_ms == 0


def draw_jitter_s(jitter_ms: float, rng: np.random.Generator) -> float:
    """One draw of a uniform ``[0, jitter_ms]``, in seconds (no draw when there is no jitter)."""
    return float(rng.uniform(0.0, jitter_ms)) / 1000.0 if jitter_ms > 0 else 0.0


@dataclass(frozen=True)
class _Arrival(Generic[Frame]):
    available: float
    stamp: float
    frame: Frame


class DelayedInference(Generic[Frame]):
    """Frames in, chunks out, on simulated time: ``add_frame`` at capture, ``poll(now)`` before each control tick."""

    def __init__(self, settings: LatencySettings, *, dt: float, rng: np.random.Generator) -> None:
        self.settings = settings
        self.dt = dt
        self._rng = rng
        self._arrivals: deque[_Arrival[Frame]] = deque()
        self._running: tuple[float, ActionChunk] | None = None  # (available at, chunk)
        self._free_at = -np.inf
        self.frames_used = 0
        self.frames_skipped = 0
        self.latencies: list[float] = []
        """Seconds from each applied chunk's frame capture to its availability."""

    def _jitter(self) -> float:
        return draw_jitter_s(self.settings.jitter_ms, self._rng)

    def add_frame(self, stamp: float, frame: Frame) -> None:
        """A frame captured at ``stamp`` (sim seconds); it reaches the model after the camera's latency."""
        available = stamp + self.settings.camera_ms / 1000.0 + self._jitter()
        if self._arrivals and available < self._arrivals[-1].available:
            available = self._arrivals[-1].available  # a camera driver delivers in order
        self._arrivals.append(_Arrival(available, stamp, frame))

    def poll(self, now: float, run: Callable[[Frame], np.ndarray]) -> list[ActionChunk]:
        """The chunks that became available by ``now``, oldest first. Starts the model (``run``: a frame -> (n, A)
        actions) on the newest frame it has whenever it is free, as the node's inference loop does."""
        ready: list[ActionChunk] = []
        while True:
            if self._running is not None:
                available, chunk = self._running
                if available > now:
                    break
                ready.append(chunk)
                self.latencies.append(available - chunk.stamp)
                self._free_at = available
                self._running = None
            if not self._arrivals or self._arrivals[0].available > now:
                break
            start = max(self._free_at, self._arrivals[0].available)
            while len(self._arrivals) > 1 and self._arrivals[1].available <= start:
                self._arrivals.popleft()  # arrived while the model ran: the newest one replaces it
                self.frames_skipped += 1
            arrival = self._arrivals.popleft()
            self.frames_used += 1
            chunk = ActionChunk(stamp=arrival.stamp, dt=self.dt, actions=run(arrival.frame))
            self._running = (start + self.settings.inference_ms / 1000.0 + self._jitter(), chunk)
        return ready


class SlowedEngine:
    """An engine whose every step takes at least the settings' inference latency (plus jitter), in wall time: the
    ROS demo's stand-in for a slow model (``make demo LATENCY_MS=300``). It exists only in the simulator tools
    (``robovlm_node.tools.sim_node``), never behind a node parameter a robot could turn on. Everything but ``step``
    is the wrapped engine's."""

    def __init__(self, engine: Any, settings: LatencySettings, *, rng: np.random.Generator) -> None:
        self.engine = engine
        self.settings = settings
        self._rng = rng
        self.delays: list[float] = []
        """Seconds each step was held beyond the engine's own time."""

    def step(self, *args: Any, **kwargs: Any) -> Any:
        started = time.monotonic()
        out = self.engine.step(*args, **kwargs)
        wait = started + self.settings.inference_ms / 1000.0 + draw_jitter_s(self.settings.jitter_ms, self._rng)
        wait -= time.monotonic()
        self.delays.append(max(wait, 0.0))
        if wait > 0:
            time.sleep(wait)
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)
