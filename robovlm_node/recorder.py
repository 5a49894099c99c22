"""RolloutRecorder: each activation (and each new instruction during one) as a rosbag2 episode in ``record_dir``.

What is written, topic by topic, is ``robovlm.data.rollout``'s schema: the frames the model takes (at its input size;
``record_full_frames``: as sent), joint states, the instruction, every planned chunk, what the base was told at each
tick and by whom, interventions and the outcome (``~/outcome``: ``success``, ``failure`` or ``aborted``, optionally
``: note``; the last one given before the next episode starts counts, so it can be given after deactivating).

Nothing here runs on the control thread but a queue put: messages are converted, serialized and written by the
recorder's own thread. A full queue drops the item and counts it (``record_dropped``); the disk budget
(``record_max_gb``, over everything in ``record_dir``) or a failed write (a full disk) ends recording until cleanup
with a WARN in diagnostics, and never touches driving.

Owns: the writer thread, its queue, the open episode and the budget. Talks to: the clock, ``NodeStatus``, the
instruction in force (``instruction``, read on the writer thread), the takeover part (the operator's command in
shadow mode). The node calls ``start_episode`` on activate, ``pause`` on deactivate and ``close`` on cleanup; the
subscriptions, the control loop (``observe``) and the inference loop (``on_plan``) hand it their data.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sensor_msgs.msg import CompressedImage, Image, JointState

from robovlm.data.rollout import RolloutBag, parse_outcome

from .convert import frame_at_size, image_to_rgb
from .loop_thread import LoopThread
from .status import NodeStatus
from .takeover import CAUSE as TAKEOVER_CAUSE
from .takeover import Takeover

QUEUE_ITEMS = 2000
"""About 20 s of a 30 Hz robot's messages: longer than any stall a healthy disk makes."""
GB = 1024**3


@dataclass(frozen=True)
class RecordingSnapshot:
    directory: str
    recording: bool
    episode: str
    """The open episode's directory name ('' when none)."""
    episodes: int
    bytes_total: int
    max_bytes: int
    dropped: int
    stopped: str
    """Why recording stopped for good ('' while it runs)."""


def directory_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


class RolloutRecorder:
    def __init__(
        self,
        *,
        directory: Path,
        max_bytes: int,
        full_frames: bool,
        image_size: int,
        fields: list[str],
        info: dict[str, object],
        clock_ns: Callable[[], int],
        status: NodeStatus,
        instruction: Callable[[], str],
        takeover: Takeover | None,
    ) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.full_frames = full_frames
        self.image_size = image_size
        self.fields = list(fields)
        self.info = dict(info)
        self._clock_ns = clock_ns
        self._status = status
        self._instruction = instruction
        self._takeover = takeover
        self.shadow = info.get("mode") == "shadow"
        self._queue: queue.Queue[Callable[[], None] | None] = queue.Queue(maxsize=QUEUE_ITEMS)
        self._lock = threading.Lock()
        self._recording = False  # between start_episode and pause: frames and commands are taken
        self._dropped = 0
        self._stopped = ""
        # writer thread only:
        self._bag: RolloutBag | None = None
        self._bag_instruction = ""
        self._intervening = False  # an intervention is open: a new episode (a new instruction) starts inside it
        self._episodes = 0
        directory.mkdir(parents=True, exist_ok=True)
        self._bytes_before = directory_bytes(directory)  # the budget covers what earlier runs left here too
        self._bytes_closed = 0
        self._thread = LoopThread("robovlm-recorder", self._run)
        self._thread.start()

    # ----------------------------------------------------------------------------------------------- producers
    def _submit(self, job: Callable[[], None]) -> None:
        """Never blocks: a full queue drops the job and counts it."""
        if self._stopped:
            return
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            with self._lock:
                self._dropped += 1
            self._status.count("record_dropped", "the recorder's queue is full (disk too slow); a message was dropped")

    def _taking(self) -> bool:
        with self._lock:
            return self._recording and not self._stopped

    def start_episode(self) -> None:
        """A new episode from now (on activate); the open one is closed."""
        with self._lock:
            self._recording = True
        text = self._instruction()  # the instruction in force now, not when the writer gets to it
        self._submit(lambda: self._open(text))

    def pause(self) -> None:
        """Deactivated: nothing more is recorded into the open episode but an outcome."""
        with self._lock:
            self._recording = False

    def on_camera(self, which: str, msg: Image | CompressedImage) -> None:
        if not self._taking():
            return
        now = self._clock_ns()
        self._submit(lambda: self._write_camera(which, msg, now))

    def on_joints(self, msg: JointState) -> None:
        if not self._taking():
            return
        now = self._clock_ns()
        stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec

        def job() -> None:
            if self._bag is not None:
                self._bag.joints(list(msg.name), list(msg.position), now, stamp)

        self._submit(job)

    def observe(self, command: np.ndarray, cause: str | None, now: float) -> None:
        """A control tick (the control loop's observer): what the base was told, and by whom."""
        if not self._taking():
            return
        ns = int(round(now * 1e9))
        text = self._instruction()
        policy: np.ndarray | None = np.array(command, np.float64)
        operator: np.ndarray | None = None
        if cause == TAKEOVER_CAUSE:
            operator, policy = policy, None
        elif self.shadow and self._takeover is not None:
            operator = self._takeover.operator_command(now)

        def job() -> None:
            self._check_instruction(text)
            if self._bag is None:
                return
            if operator is not None:
                self._bag.command(operator, "operator", ns)
                if policy is not None:
                    self._bag.policy_command(policy, ns)
            elif policy is not None and not self.shadow:
                self._bag.command(policy, "policy", ns)
            elif policy is not None:
                self._bag.policy_command(policy, ns)

        self._submit(job)

    def on_plan(self, actions: np.ndarray, dt: float, frame_stamp: float | None, now: float) -> None:
        if not self._taking():
            return
        ns = int(round(now * 1e9))
        frame_ns = ns if frame_stamp is None else int(round(frame_stamp * 1e9))
        acts = np.array(actions, np.float64)

        def job() -> None:
            if self._bag is not None:
                self._bag.plan(acts, dt, frame_ns, ns)

        self._submit(job)

    def intervention(self, started: bool, now: float) -> None:
        ns = int(round(now * 1e9))

        def job() -> None:
            self._intervening = started
            if self._bag is not None:
                self._bag.intervention(started, ns)

        self._submit(job)

    def on_outcome(self, text: str) -> str | None:
        """An outcome for the open (or last) episode; the error in words when ``text`` is not one."""
        try:
            label, note = parse_outcome(text)
        except ValueError as exc:
            return str(exc)
        ns = self._clock_ns()
        value = f"{label}: {note}" if note else label

        def job() -> None:
            if self._bag is None:
                self._status.count("record_outcome_unused", f"outcome {value!r} given with no episode recorded")
                return
            self._bag.text("outcome", value, ns)
            self._status.log.info(f"outcome of {self._bag.path.name}: {value}")

        self._submit(job)
        return None

    # ----------------------------------------------------------------------------------------------- writer thread
    def _run(self, stop: threading.Event) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                break
            if self._stopped:
                continue
            try:
                job()
                self._check_budget()
            except Exception as exc:  # a full disk, a failed conversion: recording ends, driving goes on
                self._stop_recording(f"a write failed ({type(exc).__name__}: {exc})")
        self._close_bag()

    def _open(self, instruction: str) -> None:
        self._close_bag()
        name = f"{self.info.get('node', 'robovlm')}_{time.strftime('%Y%m%d-%H%M%S')}_{self._episodes:04d}"
        path = self.directory / name
        while path.exists():
            path = path.with_name(path.name + "_")
        self._bag = RolloutBag(path, fields=self.fields, info=self.info)
        self._bag_instruction = instruction
        self._episodes += 1
        now = self._clock_ns()
        if instruction:
            self._bag.text("instruction", instruction, now)
        if self._intervening:  # the operator still has the robot: this episode starts inside the intervention
            self._bag.intervention(True, now)
        self._status.log.info(f"recording episode {path}")

    def _check_instruction(self, text: str) -> None:
        """A new instruction during an activation is a new episode."""
        if self._bag is not None and text and text != self._bag_instruction:
            self._open(text)

    def _write_camera(self, which: str, msg: Image | CompressedImage, ns: int) -> None:
        if self._bag is None:
            return
        if self.full_frames and isinstance(msg, Image):
            rgb = image_to_rgb(msg)
        else:
            rgb = frame_at_size(msg, self.image_size)
        stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
        self._bag.image(which, rgb, ns, stamp)

    def _bytes_total(self) -> int:
        return self._bytes_before + self._bytes_closed + (self._bag.bytes_written if self._bag is not None else 0)

    def _check_budget(self) -> None:
        if self._bytes_total() > self.max_bytes:
            self._stop_recording(
                f"record_dir {self.directory} holds {self._bytes_total() / 1e6:.1f} MB, over record_max_gb "
                f"({self.max_bytes / GB:.4g} GB)"
            )

    def _stop_recording(self, why: str) -> None:
        self._stopped = why
        self._status.log.warning(f"recording stopped: {why}; the robot drives on unrecorded")
        try:
            self._close_bag()
        except Exception as exc:
            self._status.log.warning(f"closing {self._bag.path if self._bag else 'the recording'} failed: {exc}")
            self._bag = None

    def _close_bag(self) -> None:
        bag, self._bag = self._bag, None
        if bag is not None:
            self._bytes_closed += bag.bytes_written
            bag.close()

    # ----------------------------------------------------------------------------------------------- lifecycle
    def close(self, timeout_s: float = 10.0) -> None:
        """Write what is queued, close the episode and end the thread (cleanup, shutdown)."""
        with self._lock:
            self._recording = False
        self._queue.put(None)  # after every job: the thread ends once they are written
        self._thread.stop(timeout_s)

    def snapshot(self) -> RecordingSnapshot:
        bag = self._bag
        with self._lock:
            return RecordingSnapshot(
                directory=str(self.directory),
                recording=self._recording and not self._stopped,
                episode=bag.path.name if bag is not None else "",
                episodes=self._episodes,
                bytes_total=self._bytes_total(),
                max_bytes=self.max_bytes,
                dropped=self._dropped,
                stopped=self._stopped,
            )


def recorder_info(*, node: str, mode: str, model: str) -> dict[str, Any]:
    """The ``custom_data`` every episode of this node carries."""
    return {"node": node, "mode": mode, "model": model}
