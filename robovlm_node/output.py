"""CommandPublisher: the velocity command output, a gate that closes before the final zero.

Owns the lifecycle publisher's use, the gate and the last command. While open, the control loop and the watchdog
publish through it; ``close_with_zero`` (deactivate, shutdown) closes the gate and publishes zero as the last message,
under one lock, so no control command can follow the final zero however the threads interleave.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from .convert import make_twist, time_from_ns


class CommandPublisher:
    def __init__(
        self,
        publisher: Any,
        *,
        fields: list[str],
        stamped: bool,
        frame_id: str,
        clock_ns: Callable[[], int],
    ) -> None:
        self._publisher = publisher  # a lifecycle publisher of Twist or TwistStamped; the node creates and frees it
        self.fields = list(fields)
        self.stamped = stamped
        self.frame_id = frame_id
        self._clock_ns = clock_ns
        self._lock = threading.Lock()
        self._open = False
        self.last_command: np.ndarray | None = None

    def open(self) -> None:
        with self._lock:
            self._open = True

    def is_open(self) -> bool:
        with self._lock:
            return self._open

    def publish(self, command: np.ndarray, stamp_ns: int) -> bool:
        with self._lock:
            if not self._open:
                return False
            self._send(command, stamp_ns)
            return True

    def publish_zero(self) -> None:
        """A zero command now, if open (a stalled clock, a failed control tick)."""
        self.publish(np.zeros(len(self.fields)), self._clock_ns())

    def close(self) -> None:
        """No command after this (the loops are being stopped)."""
        with self._lock:
            self._open = False

    def final_zero(self) -> None:
        """Zero as the last message of an activation: after ``close`` and after the loops have stopped."""
        with self._lock:
            self._open = False
            self._send(np.zeros(len(self.fields)), self._clock_ns())

    def _send(self, command: np.ndarray, stamp_ns: int) -> None:
        stamp = time_from_ns(stamp_ns)
        self._publisher.publish(
            make_twist(command, self.fields, stamped=self.stamped, stamp=stamp, frame_id=self.frame_id)
        )
        self.last_command = command
