"""PlanView: what the policy plans and what the robot was told, for rviz2 and Foxglove (standard message types).

- ``~/plan`` (``nav_msgs/Path``): the chunk the robot follows, from now on, integrated over its time step in the
  robot's frame (``frame_id``; ``robovlm.runtime.plan_path``); pose ``k`` is stamped with the time it is due;
- ``~/executed`` (``nav_msgs/Path``): the commands published over the last ``executed_window_s``, integrated, in
  the frame of the robot's pose now (the trail ends at the origin); stamps are the commands' times;
- ``~/debug_image`` (``sensor_msgs/Image``): the head frame as the model took it, the plan beside it, the
  instruction and the hold cause (``robovlm.runtime.plan_overlay``).

Each is built only while it has a subscriber, at most ``visualization_rate_hz``, on this part's own thread: the
control loop's only cost is ``observe``, which appends the command it published to a bounded list. With
``visualization_rate_hz`` 0 the topics are not created.

Owns: the recent commands, the last cause, the publishers' thread. Talks to: the scheduler (``plan``), the inputs
(``model_frame``, ``instruction``, ``latest``) and its three publishers.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Path
from sensor_msgs.msg import Image

from robovlm.runtime.plan_overlay import draw_overlay
from robovlm.runtime.plan_path import chunk_path, trail_path
from robovlm.runtime.scheduler import ChunkScheduler

from .convert import rgb_to_image, time_from_ns
from .inputs import Inputs
from .loop_thread import LoopThread
from .settings import Settings
from .status import STOP_CAUSES
from .takeover import CAUSE as TAKEOVER_CAUSE

MAX_TRAIL_POSES = 50  # ~/executed's poses, evenly spaced over the window (each is seven Python objects to build)


def time_msg(seconds: float) -> Time:
    """Node-clock seconds -> ``Time``. The whole seconds are split off before scaling: ``seconds * 1e9`` in float64
    would resolve only 256 ns today, coarser than the 0.24 us the seconds themselves hold."""
    sec = math.floor(seconds)
    return time_from_ns(sec * 1_000_000_000 + round((seconds - sec) * 1e9))  # seconds - sec is exact


def path_msg(poses: np.ndarray, times: np.ndarray, *, stamp: float, frame_id: str) -> Path:
    """(N, 3) poses (x, y, yaw) reached at ``times`` (node clock, seconds) -> ``nav_msgs/Path``."""
    msg = Path()
    msg.header.stamp, msg.header.frame_id = time_msg(stamp), frame_id
    for (x, y, yaw), t in zip(poses, times, strict=True):
        p = PoseStamped()
        p.header.stamp, p.header.frame_id = time_msg(float(t)), frame_id
        p.pose.position.x, p.pose.position.y = float(x), float(y)
        p.pose.orientation.z, p.pose.orientation.w = math.sin(yaw / 2.0), math.cos(yaw / 2.0)
        msg.poses.append(p)
    return msg


def build_plan_view(node: Any, s: Settings, *, scheduler: ChunkScheduler, inputs: Inputs) -> PlanView | None:
    """The part with its three publishers made on ``node``; None when ``visualization_rate_hz`` is 0."""
    if s.visualization_rate_hz <= 0:
        return None
    return PlanView(
        plan_pub=node.create_publisher(Path, "~/plan", 1),
        executed_pub=node.create_publisher(Path, "~/executed", 1),
        image_pub=node.create_publisher(Image, "~/debug_image", 1),
        fields=s.action_fields,
        rate_hz=s.visualization_rate_hz,
        executed_window_s=s.executed_window_s,
        frame_id=s.frame_id,
        clock=node.now,
        scheduler=scheduler,
        inputs=inputs,
    )


class PlanView:
    def __init__(
        self,
        *,
        plan_pub: Any,
        executed_pub: Any,
        image_pub: Any,
        fields: list[str],
        rate_hz: float,
        executed_window_s: float,
        frame_id: str,
        clock: Callable[[], float],
        scheduler: ChunkScheduler,
        inputs: Inputs,
    ) -> None:
        self.fields = list(fields)
        self.rate_hz = rate_hz
        self.executed_window_s = executed_window_s
        self.frame_id = frame_id
        self._pubs = {"plan": plan_pub, "executed": executed_pub, "debug_image": image_pub}
        self._clock = clock  # node clock, seconds
        self._scheduler = scheduler
        self._inputs = inputs
        self._lock = threading.Lock()
        self._trail: deque[tuple[float, np.ndarray]] = deque()  # (time, published command), oldest first
        self._cause: str | None = None
        self._thread = LoopThread("robovlm-plan-view", self._run)
        self.published = dict.fromkeys(self._pubs, 0)  # messages sent per topic since configure

    # ------------------------------------------------------------------------------------ control thread
    def observe(self, command: np.ndarray, cause: str | None, now: float) -> None:
        """A control tick's command: appended, the ones older than the window dropped; nothing else here."""
        with self._lock:
            self._trail.append((now, command))
            while self._trail and now - self._trail[0][0] > self.executed_window_s:
                self._trail.popleft()
            self._cause = cause

    # ------------------------------------------------------------------------------------ its own thread
    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 1.0) -> None:
        self._thread.stop(timeout_s)

    def _run(self, stop: threading.Event) -> None:
        while not stop.wait(1.0 / self.rate_hz):
            self.publish_once()

    def publishers(self) -> list[Any]:
        """For the node to destroy on cleanup."""
        return list(self._pubs.values())

    def wanted(self) -> list[str]:
        """The topics someone subscribes to now."""
        return [name for name, pub in self._pubs.items() if pub.get_subscription_count() > 0]

    def publish_once(self) -> list[str]:
        """Build and publish what has subscribers; returns the topics published."""
        wanted = self.wanted()
        if not wanted:
            return []
        now = self._clock()
        plan, plan_times = self.plan(now)
        msgs: dict[str, Any] = {}
        if "plan" in wanted:
            msgs["plan"] = path_msg(plan, plan_times, stamp=now, frame_id=self.frame_id)
        executed, executed_times = self.executed(now)
        if "executed" in wanted:
            msgs["executed"] = path_msg(executed, executed_times, stamp=now, frame_id=self.frame_id)
        if "debug_image" in wanted:
            msgs["debug_image"] = self.debug_image(now, plan, executed)
        for name, msg in msgs.items():
            self._pubs[name].publish(msg)
            self.published[name] += 1
        return list(msgs)

    def plan(self, now: float) -> tuple[np.ndarray, np.ndarray]:
        """(N + 1, 3) poses of the chunk followed from now on and the times they are reached; empty when none is
        fresh. Pose 0 is the robot now: the action due now drives it for the rest of its step only."""
        chunk = self._scheduler.plan(now)
        if chunk is None:
            return np.zeros((0, 3)), np.zeros(0)
        ends = chunk.stamp + chunk.dt * np.arange(1, len(chunk.actions) + 1)  # (N,) when each action's step ends
        start = min(max(now, chunk.stamp), float(ends[0]))
        times = np.concatenate([[start], ends])
        return chunk_path(chunk.actions, self.fields, np.diff(times)), times

    def executed(self, now: float) -> tuple[np.ndarray, np.ndarray]:
        """Up to ``MAX_TRAIL_POSES`` poses the published commands drove through, in the frame of the robot now, and
        their times."""
        with self._lock:
            trail = [(t, c) for t, c in self._trail if now - t <= self.executed_window_s]
        if not trail:
            return np.zeros((0, 3)), np.zeros(0)
        times = np.array([t for t, _ in trail])
        poses = trail_path(times, np.stack([c for _, c in trail]), self.fields, now)
        times = np.append(times, max(now, float(times[-1])))
        keep = np.unique(np.linspace(0, len(poses) - 1, min(len(poses), MAX_TRAIL_POSES)).round().astype(int))
        return poses[keep], times[keep]  # the first and the last pose always kept

    def debug_image(self, now: float, plan: np.ndarray, executed: np.ndarray) -> Any:
        with self._lock:
            cause = self._cause
        head = self._inputs.latest().head
        picture = draw_overlay(
            self._inputs.model_frame("head"),
            plan,
            executed,
            instruction=self._inputs.instruction().text,
            hold_cause=cause if cause in STOP_CAUSES or cause == TAKEOVER_CAUSE else None,
        )
        frame_id = head.value.header.frame_id if head is not None else ""  # the head camera's, as its picture
        return rgb_to_image(picture, stamp=time_msg(now), frame_id=frame_id)
