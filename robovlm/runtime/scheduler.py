"""Which action of which chunk is due now.

The inference loop hands over ``ActionChunk``s stamped with the time of the observation they were computed from;
action ``i`` of a chunk is due at ``stamp + i * dt``. The control loop asks ``action_at(now)``:
- ``latest``: the newest chunk's action due now;
- ``open_loop``: keep executing the current chunk until its actions run out, then switch to the newest (openpi);
- ``ensemble``: ACT temporal ensembling: every chunk that has an action for now contributes it, weighted
  ``exp(-decay * k)`` with ``k = 0`` for the oldest chunk;
- ``blend``: the newest chunk, faded in: when a new chunk takes over, the command moves from the old chunk's action
  to the new one's linearly over ``blend_s`` (the old chunk's plan for those ticks, where it still has one), so a
  late chunk whose first due action differs from the old plan does not make the command jump.
All modes return None when the newest chunk is older than ``chunk_timeout_s`` (the model stalled) or no chunk
covers now.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass

import numpy as np

MODES = ("ensemble", "open_loop", "latest", "blend")


@dataclass(frozen=True)
class ActionChunk:
    stamp: float
    """Seconds (node clock) of the observation the chunk was computed from; action 0 is due then."""
    dt: float
    """Seconds between consecutive actions."""
    actions: np.ndarray
    """(n, A) in physical units."""

    def index_at(self, now: float) -> int:
        return int(math.floor((now - self.stamp) / self.dt + 1e-9))

    def action_at(self, now: float) -> np.ndarray | None:
        i = self.index_at(now)
        return self.actions[i] if 0 <= i < len(self.actions) else None


class ChunkScheduler:
    """Thread-safe: ``push`` from the inference thread, ``action_at`` from the control timer."""

    def __init__(
        self, mode: str, *, chunk_timeout_s: float, ensemble_decay: float = 0.01, blend_s: float = 0.3
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"chunk_mode must be one of {list(MODES)}, got {mode!r}")
        if not (math.isfinite(blend_s) and blend_s > 0):
            raise ValueError(f"blend_s must be finite and > 0, got {blend_s}")
        self.mode = mode
        self.chunk_timeout_s = chunk_timeout_s
        self.decay = ensemble_decay
        self.blend_s = blend_s
        self._fading: ActionChunk | None = None  # blend: the chunk being faded out
        self._switched_at = 0.0
        self._chunks: deque[ActionChunk] = deque()
        self._current: ActionChunk | None = None
        self._generation = 0
        self._lock = threading.Lock()

    def reset(self) -> None:
        """Drop every chunk and start a new generation: a chunk planned before the reset is refused by ``push``."""
        with self._lock:
            self._chunks.clear()
            self._current = None
            self._fading = None
            self._generation += 1

    @property
    def generation(self) -> int:
        """Read before planning a chunk (before reading the instruction and frames it is planned from); pass it to
        ``push``, so a chunk of a task that ended while the model ran (a new instruction, a failed engine, an unusable
        frame) never reaches the robot."""
        with self._lock:
            return self._generation

    def push(self, chunk: ActionChunk, *, generation: int | None = None) -> bool:
        """Queue a chunk; False (dropped) when ``generation`` is given and a reset came since it was read."""
        with self._lock:
            if generation is not None and generation != self._generation:
                return False
            self._chunks.append(chunk)
            return True

    def newest_stamp(self) -> float | None:
        with self._lock:
            return self._chunks[-1].stamp if self._chunks else None

    def plan(self, now: float) -> ActionChunk | None:
        """The chunk the robot follows from ``now`` (``open_loop``: the one being executed; the other modes: the
        newest), cut to the actions due from ``now`` on and stamped with the first of them; None when nothing fresh
        is planned. For display (``~/plan``): what is commanded is ``action_at``, which blends and ensembles."""
        with self._lock:
            if not self._chunks or now - self._chunks[-1].stamp > self.chunk_timeout_s:
                return None
            chunk = self._open_loop_current(now) if self.mode == "open_loop" else self._chunks[-1]
            i = max(0, chunk.index_at(now))
            if i >= len(chunk.actions):
                return None
            return ActionChunk(chunk.stamp + i * chunk.dt, chunk.dt, chunk.actions[i:].copy())

    def action_at(self, now: float) -> np.ndarray | None:
        with self._lock:
            # drop chunks with nothing left to give
            while self._chunks and self._chunks[0].index_at(now) >= len(self._chunks[0].actions):
                self._chunks.popleft()
            if not self._chunks or now - self._chunks[-1].stamp > self.chunk_timeout_s:
                return None
            newest = self._chunks[-1]
            if self.mode == "latest":
                return newest.action_at(now)
            if self.mode == "blend":
                return self._blend(newest, now)
            if self.mode == "open_loop":
                return self._open_loop_current(now).action_at(now)
            acts = [a for a in (c.action_at(now) for c in self._chunks) if a is not None]
            if not acts:
                return None
            w = np.exp(-self.decay * np.arange(len(acts)))
            ensembled: np.ndarray = (w[:, None] * np.stack(acts)).sum(0) / w.sum()
            return ensembled

    def _open_loop_current(self, now: float) -> ActionChunk:
        """The chunk being executed; once its actions run out, the newest (lock held, a chunk queued). ``plan``
        makes the switch too, so the chunk it shows is the one the next control ticks command."""
        if self._current is None or self._current.action_at(now) is None:
            self._current = self._chunks[-1]
        return self._current

    def _blend(self, newest: ActionChunk, now: float) -> np.ndarray | None:
        if newest is not self._current:
            self._fading, self._current, self._switched_at = self._current, newest, now
        new = newest.action_at(now)
        alpha = (now - self._switched_at) / self.blend_s
        old = self._fading.action_at(now) if self._fading is not None and alpha < 1.0 else None
        if new is None or old is None:
            return new
        blended: np.ndarray = (1.0 - alpha) * old + alpha * new
        return blended
