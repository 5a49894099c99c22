"""ControlLoop: at ``control_rate_hz``, take the action due now, pass it through the safety filter and publish it.

Paced on absolute deadlines of the node clock (no drift; ``use_sim_time`` works), on a thread of its own so no
subscription callback delays a tick. After an overrun of more than a period it resynchronizes; the first tick after
activation is a start, not an overrun (it may wake late when a paused sim clock resumes). A slow or crashed model,
a stale input or any hold cause makes the robot stop, never run on a stale command; a tick that raises publishes zero
and the loop goes on.

Owns: the safety filter and its thread, the start state's reporting ("waiting for ..."), the end-to-end latency
hand-off from the inference loop (``frame_planned``). Talks to: the chunk scheduler (``action_at``), the inputs
(``ages``, ``missing``), its hold sources in order (each has ``hold_cause()``: operator enable, engine supervisor,
watchdog, inputs, as Nav2's collision monitor holds its list of sources), the command output and ``NodeStatus``.
No ROS import: the clock and the output are the two objects the node adapts (``LoopClock``, ``CommandOutput``),
so pacing and hold causes are tested with a fake clock.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from robovlm.runtime.safety import STOP_CAUSES, SafetyFilter
from robovlm.runtime.scheduler import ChunkScheduler

from .loop_thread import LoopThread
from .status import NodeStatus
from .takeover import CAUSE as TAKEOVER_CAUSE

STARTUP_GRACE_S = 5.0
"""After activation, missing inputs and the missing first chunk are the normal start (INFO) for this long."""


class ClockGone(Exception):
    """The clock or its context ended (shutdown): the loop ends."""


class LoopClock(Protocol):
    """The node clock, in integer nanoseconds (a command's stamp is exact)."""

    def now_ns(self) -> int: ...

    def sleep_until_ns(self, deadline_ns: int, stop: threading.Event | None = None) -> bool:
        """Sleep until the clock reads ``deadline_ns``; False when the clock changed source (ROS time switched on or
        off) or ``stop`` was set before that; ``ClockGone`` when the clock or its context ended."""
        ...


class CommandOutput(Protocol):
    """Where commands go; closed (publishes nothing) while the node is not active."""

    def is_open(self) -> bool: ...

    def publish(self, command: np.ndarray, stamp_ns: int) -> bool:
        """Publish if open; False when closed (deactivation began)."""
        ...

    def publish_zero(self) -> None: ...


class HoldSource(Protocol):
    def hold_cause(self) -> str | None:
        """A fault that stops the robot now (one of ``robovlm.runtime.safety.HOLD_CAUSES``), or None."""
        ...


class CommandObserver(Protocol):
    def observe(self, command: np.ndarray, cause: str | None, now: float) -> None:
        """A command the loop published (or held silent) at ``now``, and why it was shaped; must not block."""
        ...


class TakeoverSource(Protocol):
    """The operator's takeover (``takeover.py``)."""

    forward: bool

    def active(self, now: float) -> bool: ...

    def operator_command(self, now: float) -> np.ndarray | None: ...


OPERATOR_HOLDS = ("not_enabled", "clock_stalled")
"""The hold causes that stop a forwarded operator command too; the model's and the cameras' do not."""


class InputAges(Protocol):
    def ages(self, now: float) -> dict[str, float | None]: ...

    def missing(self, now: float) -> list[str]: ...


class ControlLoop:
    def __init__(
        self,
        *,
        rate_hz: float,
        input_timeout_s: float,
        rt_priority: int,
        clock: LoopClock,
        scheduler: ChunkScheduler,
        safety: SafetyFilter,
        inputs: InputAges,
        holds: Sequence[HoldSource],
        output: CommandOutput,
        status: NodeStatus,
        silent_causes: tuple[str, ...] = (),
        observers: Sequence[CommandObserver] = (),
        takeover: TakeoverSource | None = None,
    ) -> None:
        self.period_ns = int(1e9 / rate_hz)
        self.input_timeout_s = input_timeout_s
        self.rt_priority = rt_priority
        self.safety = safety
        self._clock = clock
        self._scheduler = scheduler
        self._inputs = inputs
        self._holds = list(holds)
        self._output = output
        self._status = status
        self._lock = threading.Lock()
        self._pending_frame_stamp: float | None = None  # camera stamp of the newest chunk's frame, not yet commanded
        self._waiting_for = ""  # what the start waits for, as last logged
        # Hold causes under which nothing is published after the first zero (``disabled_output: silent``: a zero
        # stream would block twist_mux's lower-priority inputs); the first zero stops the robot at once.
        self._silent_causes = silent_causes
        self._last_cause: str | None = None  # the cause of the previous tick's decision
        self._observers = list(observers)  # shadow comparison, plan view, recorder
        self._takeover = takeover
        self._thread = LoopThread("robovlm-control", self.run)

    # ----------------------------------------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Begin ticking (on activate): a fresh safety filter state, the start state reported from now."""
        self.safety.reset()
        self._waiting_for = ""
        self._last_cause = None
        self._status.start_began(self._clock.now_ns() * 1e-9)
        self._thread.start()

    def stop(self, timeout_s: float = 1.0) -> None:
        """Ends a sleep on a paused sim clock too (``RosLoopClock``); a tick after the output closed publishes
        nothing."""
        self._thread.stop(timeout_s)

    # ----------------------------------------------------------------------------------------------- inference side
    def frame_planned(self, frame_stamp: float | None) -> None:
        """The inference loop queued a chunk planned from a frame stamped ``frame_stamp``; the first command that is
        not held after it gives one camera-to-command latency."""
        with self._lock:
            self._pending_frame_stamp = frame_stamp

    # ----------------------------------------------------------------------------------------------- ticks
    def hold_cause(self) -> str | None:
        """The first cause among the hold sources, in their order."""
        for source in self._holds:
            cause = source.hold_cause()
            if cause is not None:
                return cause
        return None

    def run(self, stop: threading.Event) -> None:
        """Tick at absolute deadlines until ``stop``."""
        self._set_scheduling()
        deadline = self._clock.now_ns()
        ticks = 0
        while not stop.is_set():
            deadline += self.period_ns
            now = self._clock.now_ns()
            if now > deadline + self.period_ns:
                if ticks > 1:
                    self._status.count("control_overrun", "control tick more than one period late; resynchronizing")
                deadline = now
            try:
                reached = self._clock.sleep_until_ns(deadline, stop)
            except ClockGone as exc:
                self._status.log.debug(f"control loop ends: {exc}")
                return
            if stop.is_set():
                return
            if not reached:  # ROS time switched on or off: the old deadline belongs to the other clock
                self._status.count(
                    "clock_changed",
                    "the node clock changed source (use_sim_time); control deadlines restart on the new clock",
                )
                deadline = self._clock.now_ns()
                continue
            ticks += 1
            try:
                self.tick()
            except Exception as exc:  # the control loop must outlive any bug in one tick: stop the robot, go on
                self._status.count("control_error", f"{type(exc).__name__}: {exc}", error=True)
                self._status.tick("control_error", self._clock.now_ns() * 1e-9)
                self._output.publish_zero()

    def tick(self) -> None:
        """One command: the action due now, shaped by the safety filter, published with the time it was read at."""
        stamp_ns = self._clock.now_ns()  # one reading: the safety filter's time and the command's stamp agree
        now = stamp_ns * 1e-9
        active = self._output.is_open()
        if active and self._takeover is not None and self._takeover.active(now):
            self._operator_tick(stamp_ns, now)
            return
        hold = self.hold_cause()  # first: a hold source may reset the plan (a grant), and the action must follow it
        action = self._scheduler.action_at(now) if active else None
        ages = self._inputs.ages(now)
        decision = self.safety.apply(action, now=now, active=active, input_ages=ages, hold=hold)
        waiting_since = self._status.waiting_since()
        if waiting_since is not None and self._still_waiting(decision.cause, now, waiting_since):
            pass  # after activation, before the inputs and the first chunk: said once at INFO (_still_waiting)
        elif decision.cause == "stale_input":
            self._status.count("stale_input", f"input older than {self.input_timeout_s}s or missing: {ages}; stopping")
        elif decision.cause == "no_fresh_chunk":
            self._status.count("no_fresh_chunk", "no fresh action chunk (model slow or stalled); stopping")
        elif decision.cause == "nonfinite_output":
            self._status.count("nonfinite_output", "model output is not finite; stopping")
        silent = decision.cause in self._silent_causes and self._last_cause == decision.cause
        self._last_cause = decision.cause
        for observer in self._observers:
            observer.observe(decision.command, decision.cause, now)
        if silent:  # held without a grant, the zero already sent: publish nothing (the final zero is sent anyway)
            self._status.tick(decision.cause, now)
            return
        if not self._output.publish(decision.command, stamp_ns):
            return
        self._status.tick(decision.cause, now)
        with self._lock:
            frame_stamp, self._pending_frame_stamp = self._pending_frame_stamp, None
        if frame_stamp is not None and decision.cause not in STOP_CAUSES:
            self._status.e2e_events.add(now, now - frame_stamp)  # camera stamp -> first command that used the frame

    def _operator_tick(self, stamp_ns: int, now: float) -> None:
        """The operator has the robot: the policy's command is held. Forwarded (``takeover_forward``), the
        operator's command goes out within the limits; otherwise nothing is published (the mux passes the
        operator's) and the filter follows the operator's command, so the policy's first command after the
        release starts from it."""
        assert self._takeover is not None
        operator = self._takeover.operator_command(now)
        hold = self.hold_cause()  # its edges (a grant, a revocation) are found on every tick
        if self._takeover.forward:
            hold = hold if hold in OPERATOR_HOLDS else None
            decision = self.safety.apply(operator, now=now, active=True, input_ages={}, hold=hold)
            command = decision.command
            if not self._output.publish(command, stamp_ns):
                return
        else:
            command = np.zeros(self.safety.dim) if operator is None else np.asarray(operator, np.float64)
            self.safety.follow(command, now)
        self._last_cause = TAKEOVER_CAUSE
        for observer in self._observers:
            observer.observe(command, TAKEOVER_CAUSE, now)
        self._status.tick(TAKEOVER_CAUSE, now)

    def _still_waiting(self, cause: str | None, now: float, since: float) -> bool:
        """Whether the node is still starting (activated, the robot held until every required input has arrived
        and the model has given its first chunk). What it waits for is logged at INFO when it changes, and once at
        WARN if it still waits after ``STARTUP_GRACE_S``; the first command that is not held ends the start."""
        log = self._status.log
        if cause not in ("stale_input", "no_fresh_chunk"):  # driving, or held by a fault that reports itself
            self._status.start_ended()
            self._waiting_for = ""
            if cause not in STOP_CAUSES:
                log.info("inputs and model ready: driving")
            return False
        missing = self._inputs.missing(now)
        what = ", ".join(missing) if missing else "the model's first action chunk"
        if what != self._waiting_for:
            self._waiting_for = what
            log.info(f"waiting for {what}")
        if now - since > STARTUP_GRACE_S and self._status.flipped("startup_slow", True):
            log.warning(f"still waiting for {what} {STARTUP_GRACE_S:g} s after activation; robot stopped")
        return True

    def _set_scheduling(self) -> None:
        """Real-time priority for this (control) thread, as ros2_control does; measured in ``make bench``:
        with the model saturating both cores, p99 tick jitter drops from about 5% of the period to under 1%."""
        if self.rt_priority == 0 or not hasattr(os, "sched_setscheduler"):
            self._status.control_scheduling = "SCHED_OTHER"
            return
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(self.rt_priority))
            self._status.control_scheduling = f"SCHED_FIFO {self.rt_priority}"
        except OSError as exc:
            self._status.control_scheduling = f"SCHED_OTHER (SCHED_FIFO refused: {exc.strerror})"
            self._status.log.warning(
                f"control thread runs without real-time priority ({exc.strerror}); tick "
                "jitter grows under load. Grant it with an rtprio limit "
                "(/etc/security/limits.conf) or CAP_SYS_NICE, or set control_rt_priority 0"
            )
