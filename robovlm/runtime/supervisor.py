"""When to restart a failed inference engine, and when to give up (no ROS here; the node acts on the answers).

Like systemd's ``Restart=`` with ``StartLimitBurst``/``StartLimitIntervalSec``: each failure is followed by a
restart after an exponentially growing delay; more than ``max_restarts`` failures within ``window_s`` means the
fault is not transient (a broken GPU driver, a model that always crashes), and the node goes to its lifecycle error
state instead of restarting forever.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field


@dataclass
class RestartPolicy:
    max_restarts: int = 3
    """Restarts allowed within ``window_s``; the next failure gives up."""
    window_s: float = 60.0
    """Failures older than this are forgotten."""
    backoff_s: float = 0.5
    """Delay before the first restart; doubled for each further failure in the window."""
    max_backoff_s: float = 8.0
    """Longest delay between failure and restart."""
    _failures: deque[float] = field(default_factory=deque)

    def __post_init__(self) -> None:
        if not (isinstance(self.max_restarts, int) and self.max_restarts >= 0):
            raise ValueError(f"max_restarts must be an integer >= 0, got {self.max_restarts!r}")
        for name in ("window_s", "backoff_s", "max_backoff_s"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be finite and > 0, got {v}")

    def failure(self, now: float) -> float | None:
        """Record a failure at ``now`` (steady seconds): the delay before restarting, or None to give up."""
        self._failures.append(now)
        while self._failures and now - self._failures[0] > self.window_s:
            self._failures.popleft()
        n = len(self._failures)
        if n > self.max_restarts:
            return None
        return float(min(self.backoff_s * 2 ** (n - 1), self.max_backoff_s))

    def recent(self) -> int:
        return len(self._failures)
