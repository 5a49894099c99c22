"""Rates and latency percentiles over a sliding window, for diagnostics and benchmarks."""

from __future__ import annotations

import threading
from collections import deque

import numpy as np


class EventWindow:
    """Times (and optional values) of recent events; thread-safe."""

    def __init__(self, maxlen: int = 200) -> None:
        self._t: deque[float] = deque(maxlen=maxlen)
        self._v: deque[float] = deque(maxlen=maxlen)
        self._lock = threading.Lock()

    def add(self, t: float, value: float = 0.0) -> None:
        with self._lock:
            self._t.append(t)
            self._v.append(value)

    def rate_hz(self, now: float, horizon_s: float = 2.0) -> float:
        """Events per second over the last ``horizon_s``."""
        with self._lock:
            recent = [t for t in self._t if now - t <= horizon_s]
        if len(recent) < 2:
            return 0.0
        span = recent[-1] - recent[0]
        return (len(recent) - 1) / span if span > 0 else 0.0

    def percentile(self, q: float) -> float:
        with self._lock:
            vals = list(self._v)
        return float(np.percentile(vals, q)) if vals else float("nan")

    def times(self) -> list[float]:
        with self._lock:
            return list(self._t)

    def items(self) -> list[tuple[float, float]]:
        """(time, value) of the events in the window, oldest first."""
        with self._lock:
            return list(zip(self._t, self._v))

    def __len__(self) -> int:
        return len(self._t)
