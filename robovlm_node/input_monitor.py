"""InputMonitor: arrival rate, last arrival and last fault of one input, on the node clock, for diagnostics and logs."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from robovlm.runtime.metrics import EventWindow


@dataclass(frozen=True)
class MonitorSnapshot:
    age: float | None
    """Seconds since the last arrival; None: never arrived."""
    rate_hz: float
    faults: int
    last_fault: str
    last_fault_t: float | None


@dataclass
class InputMonitor:
    label: str
    topic: str
    arrivals: EventWindow = field(default_factory=lambda: EventWindow(100))
    last_rx: float | None = None
    last_fault: str = ""
    last_fault_t: float | None = None
    faults: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def arrived(self, now: float) -> None:
        self.arrivals.add(now)
        with self._lock:
            self.last_rx = now

    def fault(self, now: float, text: str) -> None:
        with self._lock:
            self.faults += 1
            self.last_fault, self.last_fault_t = text, now

    def age(self, now: float) -> float | None:
        with self._lock:
            return None if self.last_rx is None else now - self.last_rx

    def snapshot(self, now: float) -> MonitorSnapshot:
        with self._lock:
            age = None if self.last_rx is None else now - self.last_rx
            faults, last_fault, last_fault_t = self.faults, self.last_fault, self.last_fault_t
        return MonitorSnapshot(age, self.arrivals.rate_hz(now), faults, last_fault, last_fault_t)
