"""LoopThread: one of the node's loops (inference, control, watchdog, diagnostics) on a thread of its own.

Each start makes a fresh stop event: a thread of an earlier activation that is still waiting (for sim time that does
not advance, say) sees its own event set and can never resume alongside the new one. ``stop`` joins with a bound,
and never joins the calling thread (a loop may stop its own part on the way to the lifecycle error state).
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class LoopThread:
    def __init__(self, name: str, target: Callable[[threading.Event], None]) -> None:
        self.name = name
        self._target = target
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._target, args=(self._stop,), name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float) -> None:
        """Ask the loop to end and wait up to ``timeout_s`` for it."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=timeout_s)

    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()
