"""Watchdog: on the steady clock, notice a node clock that stopped (a stalled ``/clock``) and log inputs that go stale
or come back.

It runs on steady time because it must keep running when the node clock does not: the control loop sleeps on the
node clock, so with a stalled ``/clock`` only the watchdog can publish the zero command. While the clock is stalled
its ``hold_cause`` is ``clock_stalled`` (one of the control loop's hold sources).

Owns: the clock watch and its thread. Talks to: the command output (``publish_zero``), the inputs
(``report_health``, skipped while the node is starting: the control loop says what it waits for) and ``NodeStatus``.
No ROS import.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

from robovlm.runtime.timecheck import ClockWatch

from .control import CommandOutput
from .loop_thread import LoopThread
from .status import NodeStatus

PERIOD_S = 0.05


class HealthReport(Protocol):
    def report_health(self, now: float) -> None: ...


class Watchdog:
    def __init__(
        self,
        *,
        stall_s: float,
        clock: Callable[[], float],
        sim_time: Callable[[], bool],
        inputs: HealthReport,
        output: CommandOutput,
        status: NodeStatus,
    ) -> None:
        self._watch = ClockWatch(stall_s=stall_s)
        self._now = clock  # node clock, seconds
        self._sim_time = sim_time  # whether the node runs on /clock, for the stall message
        self._inputs = inputs
        self._output = output
        self._status = status
        self._stalled = threading.Event()
        self._thread = LoopThread("robovlm-watchdog", self.run)

    def start(self) -> None:
        self._watch = ClockWatch(stall_s=self._watch.stall_s)  # a stall is judged afresh from this activation
        self._stalled.clear()
        self._thread.start()

    def stop(self, timeout_s: float = 1.0) -> None:
        self._thread.stop(timeout_s)

    def hold_cause(self) -> str | None:
        return "clock_stalled" if self._stalled.is_set() else None

    def stalled(self) -> bool:
        return self._stalled.is_set()

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(PERIOD_S):
            self.check(time.monotonic())

    def check(self, steady: float) -> None:
        """One watchdog round at steady time ``steady``: a stalled node clock publishes one zero and is reported."""
        event = self._watch.update(steady, self._now())
        log = self._status.log
        if event == "stalled":
            self._output.publish_zero()
            self._stalled.set()
            self._status.held("clock_stalled")
            log.error(
                f"[clock_stalled] the node clock has not advanced for {self._watch.stall_s:g} s"
                + (" (use_sim_time: is /clock still published?)" if self._sim_time() else "")
                + "; zero command published, robot stopped"
            )
        elif event == "resumed":
            self._stalled.clear()
            log.info("the node clock advances again")
        if self._status.waiting_since() is None:  # starting: the control loop says what it waits for
            self._inputs.report_health(self._now())
