"""InferenceLoop: run the engine's streaming ``step()`` on each new head-camera frame, as fast as the model allows,
and queue the action chunk it plans (stamped with the frame's arrival on the node clock) in the chunk scheduler.

The two loops are decoupled: the model refreshes the plan at its own speed, the control loop publishes at
``control_rate_hz`` whatever that speed. The loop reads the scheduler's generation before it reads the inputs, so a
chunk planned while the task changed (a new instruction, an unusable frame, a failed engine) is refused by the
scheduler and never reaches the robot. An engine that dies or hangs is handed to the supervisor, which restarts it
while the robot is held; one step that raises is counted and the loop goes on.

Owns: its thread. Talks to: the inputs (``latest``, ``camera_frames``), the engine supervisor (``engine``,
``step_failed``, ``recover``), the scheduler (``generation``, ``push``, ``reset``), the control loop
(``frame_planned``) and ``NodeStatus``. No ROS import.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np

from robovlm.runtime.engine import EngineError, EngineUnavailable
from robovlm.runtime.scheduler import ActionChunk, ChunkScheduler

from .control import ControlLoop
from .inputs import Inputs
from .loop_thread import LoopThread
from .status import NodeStatus
from .supervision import EngineSupervisor

IDLE_WAIT_S = 0.002
"""How often the loop looks for a new frame when there is none."""


class InferenceLoop:
    def __init__(
        self,
        *,
        clock: Callable[[], float],
        input_timeout_s: float,
        use_receive_time: bool,
        inputs: Inputs,
        supervisor: EngineSupervisor,
        scheduler: ChunkScheduler,
        control: ControlLoop,
        status: NodeStatus,
        on_plan: Callable[[np.ndarray, float, float | None, float], None] | None = None,
    ) -> None:
        self._now = clock  # node clock, seconds
        self.input_timeout_s = input_timeout_s
        self.use_receive_time = use_receive_time
        self._inputs = inputs
        self._supervisor = supervisor
        self._scheduler = scheduler
        self._control = control
        self._status = status
        self._on_plan = on_plan  # the recorder: (actions (T, F), dt, the chunk's time origin, now) of each chunk queued
        self._fresh_after = -float("inf")  # plan only from frames received after this (an operator let go)
        self._thread = LoopThread("robovlm-inference", self.run)

    def plan_from_frames_after(self, t: float) -> None:
        """The next chunk comes from frames received after ``t`` (node clock): the operator let go, and the scene
        before that is not the one the robot is in."""
        self._fresh_after = t

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """At most one model step to wait for."""
        self._thread.stop(timeout_s)

    def run(self, stop: threading.Event) -> None:
        last_seq = -1
        timeout = self.input_timeout_s
        while not stop.is_set():
            generation = self._scheduler.generation  # before the inputs: see the module docstring
            now = self._now()
            snap = self._inputs.latest()
            head, hand = snap.head, snap.hand
            if (
                head is None
                or head.seq == last_seq
                or head.rx_time <= self._fresh_after
                or any(a is None or a > timeout for a in self._inputs.ages(now).values())
                or self._inputs.stamp_hold() is not None  # not frame faults: only a new frame can clear those
            ):
                stop.wait(IDLE_WAIT_S)
                continue
            if not snap.instruction:
                if not snap.refused:
                    self._status.count(
                        "no_instruction", "no instruction yet: set the 'instruction' parameter or publish one"
                    )
                stop.wait(0.05)
                continue
            assert head is not None
            use_hand = hand is not None and hand.fault is None and now - hand.rx_time <= timeout
            frames = self._inputs.camera_frames({"head": head, "hand": hand if use_hand else None})
            head_rgb, hand_rgb = frames["head"], frames["hand"]  # hand None: the model's missing-hand marker
            if head_rgb is None:  # undecodable or nothing to drive on (held at zero): wait for the next frame
                last_seq = head.seq
                continue
            engine = self._supervisor.engine
            t0 = time.perf_counter()
            try:
                actions = engine.step(
                    head_rgb, hand_rgb, None if snap.state is None else snap.state.value, snap.instruction
                )
            except EngineUnavailable as exc:  # the server is down or slow: hold the robot, try again after its backoff
                self._scheduler.reset()  # the robot never resumes on a chunk planned before the gap
                self._supervisor.unavailable(exc)
                stop.wait(exc.retry_after_s)
                continue
            except EngineError as exc:  # the process died or hung: restart it (the robot is held meanwhile)
                self._scheduler.reset()  # the robot never resumes on a chunk planned before the failure
                if not self._supervisor.recover(exc, stop):
                    return
                continue
            except Exception as exc:  # one bad step: keep the loop alive; the control loop stops the robot meanwhile
                self._supervisor.step_failed(exc)
                stop.wait(0.05)
                continue
            latency = time.perf_counter() - t0
            self._supervisor.available()
            last_seq = head.seq
            chunk = ActionChunk(stamp=head.rx_time, dt=engine.stats.action_dt, actions=actions)
            if self._scheduler.push(chunk, generation=generation):
                frame_stamp = head.rx_time if self.use_receive_time else head.stamp
                self._control.frame_planned(frame_stamp)
                self._status.infer_events.add(self._now(), latency)
                if self._on_plan is not None:
                    self._on_plan(actions, chunk.dt, chunk.stamp, self._now())
