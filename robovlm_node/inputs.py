"""Inputs: the newest camera frames, joint state and instruction, each input's health, and what in them stops the robot.

Subscription callbacks run on the executor thread that also serves joint states and timers, so ``on_camera`` and
``on_joint_state`` only do O(1) work: check a frame's size from its header (``max_image_pixels``, refused before any
decoding) and its header stamp, then keep the message. Decoding, colour conversion and resizing to the model's input
size happen on the inference thread, once per frame the model actually uses (``camera_frames``), so only a few kB
cross to the engine process and a burst of large frames never delays a control tick or a joint state.

Header stamps of camera frames and joint states are checked against the node clock
(``robovlm.runtime.timecheck.stamp_fault``): a message older than ``input_timeout_s`` or ahead by more than
``max_stamp_lead_s`` is kept out of the model and stops the robot while it lasts (``use_receive_time`` turns this
off for drivers whose clocks are not synchronised).

An instruction longer than the checkpoint's ``max_instruction_tokens`` is refused and the robot stops until a
valid one arrives: the model's memory grows with the prompt, so nobody who can publish on the topic can exhaust
the robot computer, and the robot never goes on with a task the operator meant to replace.

Talks to: ``NodeStatus`` (counts and logs), and ``on_new_task()`` (the node wires it to the chunk scheduler's reset)
when the instruction changes or a required camera's frames become unusable, so no chunk planned before runs after.
Read by: the inference loop (``latest``, ``camera_frames``), the control loop (``ages``, ``missing``, ``hold_cause``),
the watchdog (``report_health``) and diagnostics (``monitors``, ``input_fault``, ``instruction``). Message types
only, no rclpy.
"""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from sensor_msgs.msg import CompressedImage, Image, JointState

from robovlm.model.tokenizer import InstructionTooLong, Tokenizer, count_instruction_tokens
from robovlm.runtime.frame_check import FrameCheck
from robovlm.runtime.timecheck import stamp_fault

from .convert import ImageConversionError, JointStateError, check_image_size, frame_at_size, joint_state_vector
from .input_monitor import InputMonitor
from .settings import Settings
from .status import NodeStatus

INPUT_LABELS = {"head": "head camera", "hand": "hand camera", "state": "joint states"}
STAMP_FAULTS = ("stale_stamp", "future_stamp")
INSTRUCTION_LOG_EVERY_S = 1.0


@dataclass(frozen=True)
class ModelInputs:
    """What the loaded checkpoint takes; fixed for a configuration (a restarted engine loads the same checkpoint)."""

    image_size: int
    uses_hand: bool
    uses_state: bool
    tokenizer: Tokenizer | None
    """None: the model runs on a server whose tokenizer is not on the robot; the server refuses a long instruction."""
    max_instruction_tokens: int


@dataclass
class Latest:
    value: Any
    """The message (cameras, converted lazily) or the joint-state vector."""
    rx_time: float
    """Arrival on the node clock, seconds."""
    seq: int
    stamp: float | None = None
    """Header stamp, seconds."""
    fault: str | None = None
    """``stale_stamp`` / ``future_stamp``: the message must not be used."""


@dataclass(frozen=True)
class InputSnapshot:
    """The newest message of each input and the instruction, read together under one lock."""

    head: Latest | None
    hand: Latest | None
    state: Latest | None
    instruction: str
    refused: str | None
    """Why the last instruction was refused (the robot is stopped), else None."""


@dataclass(frozen=True)
class InstructionView:
    text: str
    source: str
    changed_at: float | None
    error: str | None


class Inputs:
    def __init__(
        self,
        settings: Settings,
        model: ModelInputs,
        *,
        clock: Callable[[], float],
        status: NodeStatus,
        on_new_task: Callable[[], None],
    ) -> None:
        self.settings = settings
        self.model = model
        self._now = clock  # node clock, seconds
        self._status = status
        self._on_new_task = on_new_task
        self._lock = threading.Lock()
        self._latest: dict[str, Latest] = {}
        self._frames: dict[str, tuple[int, np.ndarray | None]] = {}  # camera -> (seq, frame at the model's size)
        self._frame_faults: dict[str, str] = {}  # camera -> why its newest checked frame cannot drive the robot
        # camera -> (checksum of its newest used frame's bytes, arrival of the first frame with those bytes)
        self._unchanged: dict[str, tuple[int, float]] = {}
        self._frame_check = FrameCheck(
            min_side_px=settings.min_image_side_px,
            min_contrast=settings.min_image_contrast,
            max_saturated_fraction=settings.max_saturated_fraction,
        )
        self._instruction = ""
        self._instruction_error: str | None = None
        self._instruction_source = ""
        self._instruction_t: float | None = None
        self._instruction_logged = -float("inf")  # wall time of the last "instruction from" line
        self.monitors = {
            "head": InputMonitor(INPUT_LABELS["head"], settings.head_camera_topic),
            "hand": InputMonitor(INPUT_LABELS["hand"], settings.hand_camera_topic),
            "state": InputMonitor(INPUT_LABELS["state"], settings.joint_states_topic),
        }
        self.used = {"head": True, "hand": model.uses_hand, "state": model.uses_state}
        self.required = ["head"]
        if model.uses_hand and settings.require_hand_camera:
            self.required.append("hand")
        if model.uses_state:
            self.required.append("state")

    # ----------------------------------------------------------------------------------------------- cameras
    def on_camera(self, which: str, msg: Image | CompressedImage) -> None:
        now = self._now()
        try:
            width, height = check_image_size(msg, self.settings.max_image_pixels)
        except ImageConversionError as exc:
            cause = "image_too_large" if "max_image_pixels" in str(exc) else "bad_image"
            self._status.count(cause, f"{INPUT_LABELS[which]}: {exc}")
            self.monitors[which].fault(now, str(exc))
            return
        small = self._frame_check.size_fault(width, height)
        if small is not None:
            self._frame_fault(which, *small)
            return
        stamp, fault = self._check_stamp(which, msg.header.stamp, now)
        self._store(which, msg, now, stamp, fault)

    def camera_frames(self, latest: dict[str, Latest | None]) -> dict[str, np.ndarray | None]:
        """Each camera's frame at the model's input size, (S, S, 3) uint8 RGB; converted once per message
        (``frame_at_size``). A message that cannot be decoded is counted and dropped, so the input reads as missing
        (the robot stops if it is required); a frame with nothing to drive on is held (``_frame_fault``); either
        way its entry is None."""
        out: dict[str, np.ndarray | None] = {}
        for which, item in latest.items():
            cached = self._frames.get(which)
            if item is None:
                out[which] = None
            elif cached is not None and cached[0] == item.seq:
                out[which] = cached[1]
            else:
                try:
                    rgb: np.ndarray | None = frame_at_size(item.value, self.model.image_size)
                except ImageConversionError as exc:
                    self._status.count("bad_image", f"{INPUT_LABELS[which]}: {exc}")
                    self.monitors[which].fault(self._now(), str(exc))
                    with self._lock:
                        if self._latest.get(which) is item:
                            del self._latest[which]
                    out[which] = None
                    continue
                assert rgb is not None
                fault = self._frame_check.content_fault(rgb) or self._frozen_fault(which, item)
                if fault is None:
                    self._frame_ok(which)
                else:
                    self._frame_fault(which, *fault)
                    rgb = None
                out[which] = rgb
                self._frames[which] = (item.seq, rgb)
        return out

    def model_frame(self, which: str) -> np.ndarray | None:
        """The newest frame the model took from ``which`` at its input size (None: none yet, or unusable)."""
        cached = self._frames.get(which)  # one dict read: the inference thread replaces entries, never edits them
        return None if cached is None else cached[1]

    def _frozen_fault(self, which: str, item: Latest) -> tuple[str, str] | None:
        """``frozen_camera`` when this camera's frames have had the same bytes for more than ``max_frozen_s`` while
        new ones kept arriving (a driver that republishes its last frame with fresh stamps). A real sensor's noise
        changes some bytes of every frame, even of a still scene, so identical bytes are the rule: no threshold to
        tune, and a frozen compressed stream is caught as well as a raw one. 0 turns the check off (a camera that
        only sends when the scene changes)."""
        limit = self.settings.max_frozen_s
        if limit <= 0:
            return None
        digest = zlib.crc32(memoryview(item.value.data).cast("B"))
        previous = self._unchanged.get(which)
        if previous is None or previous[0] != digest:
            self._unchanged[which] = (digest, item.rx_time)
            return None
        frozen_for = item.rx_time - previous[1]
        if frozen_for <= limit:
            return None
        return "frozen_camera", (
            f"frames unchanged for {frozen_for:.1f} s while still arriving (max_frozen_s={limit:g}): "
            "a driver repeating its last frame?"
        )

    def _frame_fault(self, which: str, cause: str, reason: str) -> None:
        """A frame with nothing to drive on (``robovlm.runtime.frame_check``): counted, shown in the camera's
        diagnostics, and, for a required camera, the robot held at zero (``degenerate_image``) until a usable frame
        of that camera arrives. The chunks planned before it are dropped, so the robot never resumes on them."""
        self._status.count(cause, f"{INPUT_LABELS[which]}: {reason}", log=False)
        self.monitors[which].fault(self._now(), f"{cause}: {reason}")
        required = which in self.required
        with self._lock:
            begins = which not in self._frame_faults
            self._frame_faults[which] = cause
        if begins and required:
            self._on_new_task()
        if self._status.flipped(f"frame:{which}", True):
            self._status.log.warning(
                f"[{cause}] {INPUT_LABELS[which]}: {reason}; "
                + (
                    "robot stopped until a usable frame arrives"
                    if required
                    else "the model runs on its missing-input marker"
                )
            )

    def _frame_ok(self, which: str) -> None:
        with self._lock:
            self._frame_faults.pop(which, None)
        if self._status.flipped(f"frame:{which}", False):
            self._status.log.info(f"{INPUT_LABELS[which]} frames are usable again")

    # ----------------------------------------------------------------------------------------------- joints
    def on_joint_state(self, msg: JointState) -> None:
        now = self._now()
        try:
            vec = joint_state_vector(msg, self.settings.state_joints)
        except JointStateError as exc:
            self._status.count("bad_joint_state", str(exc))
            self.monitors["state"].fault(now, str(exc))
            return
        stamp, fault = self._check_stamp("state", msg.header.stamp, now)
        self._store("state", vec, now, stamp, fault)

    # ----------------------------------------------------------------------------------------------- stamps
    def _check_stamp(self, which: str, header_stamp: Any, now: float) -> tuple[float, str | None]:
        """The header stamp in seconds and its fault (``stale_stamp`` / ``future_stamp``, or None), logged once when
        a fault begins and once when it ends, counted and shown in the input's diagnostics. ``use_receive_time``
        skips the check (drivers whose clocks are not synchronised, or that do not stamp)."""
        stamp = header_stamp.sec + header_stamp.nanosec * 1e-9
        s = self.settings
        if s.use_receive_time:
            return stamp, None
        fault = stamp_fault(stamp, now, max_age_s=s.input_timeout_s, max_lead_s=s.max_stamp_lead_s)
        what = "frames" if which in ("head", "hand") else "messages"
        for cause in STAMP_FAULTS:
            if not self._status.flipped(f"{cause}:{which}", fault == cause):
                continue
            if fault != cause:
                self._status.log.info(f"{INPUT_LABELS[which]} stamps are sane again")
                continue
            offset = now - stamp
            when = (
                "unset (zero)"
                if stamp == 0
                else f"{abs(offset):.3f} s {'behind' if offset > 0 else 'ahead of'} the node clock"
            )
            self._status.log.warning(
                f"[{cause}] {INPUT_LABELS[which]} {what} are stamped {when}; not used"
                + (", robot stopped" if which in self.required else "")
                + " (use_receive_time:=true for a driver whose clock is not synchronised)"
            )
        if fault is not None:
            self._status.count(
                fault, f"{INPUT_LABELS[which]} header stamp {stamp:.3f} vs node clock {now:.3f}", log=False
            )
            self.monitors[which].fault(now, f"{fault}: header stamp {stamp:.3f}, node clock {now:.3f}")
        return stamp, fault

    def _store(self, key: str, value: Any, now: float, stamp: float | None = None, fault: str | None = None) -> None:
        with self._lock:
            prev = self._latest.get(key)
            self._latest[key] = Latest(value, now, (prev.seq + 1) if prev else 0, stamp, fault)
        self.monitors[key].arrived(now)

    # ----------------------------------------------------------------------------------------------- readers
    def latest(self) -> InputSnapshot:
        with self._lock:
            return InputSnapshot(
                self._latest.get("head"),
                self._latest.get("hand"),
                self._latest.get("state"),
                self._instruction,
                self._instruction_error,
            )

    def ages(self, now: float) -> dict[str, float | None]:
        """Seconds since each required input last arrived (None: never)."""
        with self._lock:
            return {k: (now - self._latest[k].rx_time) if k in self._latest else None for k in self.required}

    def missing(self, now: float) -> list[str]:
        """Labels of the required inputs that never arrived or are older than ``input_timeout_s``."""
        timeout = self.settings.input_timeout_s
        return [INPUT_LABELS[k] for k, age in self.ages(now).items() if age is None or age > timeout]

    def input_fault(self, key: str) -> str | None:
        """The fault of one input's newest message (stamp) or frames (``robovlm.runtime.frame_check``), or None."""
        with self._lock:
            latest = self._latest.get(key)
            if latest is not None and latest.fault is not None:
                return latest.fault
            return self._frame_faults.get(key)

    def stamp_hold(self) -> str | None:
        """A stamp fault on the newest message of a required input, which stops the robot while it lasts."""
        with self._lock:
            return self._stamp_fault_locked()

    def _stamp_fault_locked(self) -> str | None:
        for key in self.required:
            latest = self._latest.get(key)
            if latest is not None and latest.fault is not None:
                return latest.fault
        return None

    def hold_cause(self) -> str | None:
        """What in the inputs stops the robot now: a refused instruction, a stamp fault on a required input's newest
        message, a required camera whose frames stopped changing (``frozen_camera``) or have nothing to drive on
        (``degenerate_image``). One pass under one lock: it runs once per control tick."""
        with self._lock:
            if self._instruction_error:
                return "bad_instruction"
            fault = self._stamp_fault_locked()
            if fault is not None:
                return fault
            faults = [self._frame_faults[key] for key in self.required if key in self._frame_faults]
            if faults:
                return "frozen_camera" if "frozen_camera" in faults else "degenerate_image"
        return None

    def report_health(self, now: float) -> None:
        """Log each used input that goes stale or comes back, once each way (the watchdog calls this)."""
        timeout = self.settings.input_timeout_s
        for key, monitor in self.monitors.items():
            if not self.used[key]:
                continue
            age = monitor.age(now)
            stale = age is None or age > timeout
            if not self._status.flipped(f"stale:{key}", stale):
                continue
            if not stale:
                self._status.log.info(f"{monitor.label} on {monitor.topic} is back")
                continue
            what = (
                "required: robot stopped"
                if key in self.required
                else "not required: the model runs on its missing-input marker"
            )
            self._status.log.warning(
                f"{monitor.label} on {monitor.topic} is "
                + ("not publishing" if age is None else f"stale ({age:.2f} s)")
                + f" ({what})"
            )

    # ----------------------------------------------------------------------------------------------- instruction
    def instruction(self) -> InstructionView:
        with self._lock:
            return InstructionView(
                self._instruction, self._instruction_source, self._instruction_t, self._instruction_error
            )

    def check_instruction(self, text: str) -> str | None:
        """The reason ``text`` is refused, or None."""
        if self.model.tokenizer is None:
            return None
        try:
            count_instruction_tokens(self.model.tokenizer, text, self.model.max_instruction_tokens)
        except InstructionTooLong as exc:
            return str(exc)
        return None

    def set_instruction(self, text: str, *, source: str) -> str | None:
        """Take a new instruction, or refuse it (returns the reason) and stop until a valid one arrives.

        Any change starts a new task: the action chunks of the previous instruction are dropped."""
        text = text.strip()
        error = self.check_instruction(text)
        now = self._now()
        with self._lock:
            changed = text != self._instruction or error != self._instruction_error
            self._instruction, self._instruction_error = ("", error) if error else (text, None)
            if changed:
                self._instruction_source, self._instruction_t = source, now
        if error:
            self._status.count(
                "instruction_refused", f"instruction from {source}: {error}; stopped until a valid instruction arrives"
            )
        if changed:
            self._on_new_task()
            t = time.monotonic()
            if not error and t - self._instruction_logged >= INSTRUCTION_LOG_EVERY_S:
                self._instruction_logged = t
                shown = text if len(text) <= 120 else text[:117] + "..."
                self._status.log.info(f"instruction from {source}: {shown!r}")
        return error
