"""The node's inputs, as a mixin of ``RoboVLMNode``: cameras, joint states and the instruction.

Subscription callbacks run on the executor thread that also serves joint states and timers, so they only do O(1)
work: check a frame's size from its header (``max_image_pixels``, refused before any decoding) and its header
stamp, then keep the message. Decoding, colour conversion and resizing to the model's input size happen on the
inference thread, once per frame the model actually uses (``camera_frames``), so only a few kB cross to the engine
process and a burst of large frames never delays a control tick or a joint state.

Header stamps of camera frames and joint states are checked against the node clock
(``robovlm.runtime.timecheck.stamp_fault``): a message older than ``input_timeout_s`` or ahead by more than
``max_stamp_lead_s`` is kept out of the model and stops the robot while it lasts (``use_receive_time`` turns this
off for drivers whose clocks are not synchronised).

An instruction longer than the checkpoint's ``max_instruction_tokens`` is refused and the robot stops until a
valid one arrives: the model's memory grows with the prompt, so nobody who can publish on the topic can exhaust
the robot computer, and the robot never goes on with a task the operator meant to replace.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
from rcl_interfaces.msg import SetParametersResult
from sensor_msgs.msg import CompressedImage, Image, JointState

from robovlm.model.tokenizer import InstructionTooLong, count_instruction_tokens
from robovlm.runtime.frame_check import FrameCheck
from robovlm.runtime.timecheck import stamp_fault

from .convert import ImageConversionError, JointStateError, check_image_size, frame_at_size, joint_state_vector

INPUT_LABELS = {"head": "head camera", "hand": "hand camera", "state": "joint states"}
STAMP_FAULTS = ("stale_stamp", "future_stamp")


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


class NodeInputs:
    """Input handling; mixed into ``RoboVLMNode``, whose attributes (settings, engine, locks, monitors) it uses."""

    _lock: threading.Lock
    _frame_check: FrameCheck
    _frame_faults: dict[str, str]

    # ----------------------------------------------------------------------------------------------- cameras
    def _on_camera(self, which: str, msg: Image | CompressedImage) -> None:
        now = self.now()
        s = self.settings
        try:
            width, height = check_image_size(msg, s.max_image_pixels)
        except ImageConversionError as exc:
            cause = "image_too_large" if "max_image_pixels" in str(exc) else "bad_image"
            self._count(cause, f"{INPUT_LABELS[which]}: {exc}")
            self.monitors[which].fault(now, str(exc))
            return
        small = self._frame_check.size_fault(width, height)
        if small is not None:
            self._frame_fault(which, *small)
            return
        stamp, fault = self._check_stamp(which, msg.header.stamp, now)
        self._store(which, msg, now, stamp, fault)

    def _check_stamp(self, which: str, header_stamp: Any, now: float) -> tuple[float, str | None]:
        """The header stamp in seconds and its fault (``stale_stamp`` / ``future_stamp``, or None), logged once when
        a fault begins and once when it ends, counted and shown in the input's diagnostics. ``use_receive_time``
        skips the check (drivers whose clocks are not synchronised, or that do not stamp)."""
        stamp = header_stamp.sec + header_stamp.nanosec * 1e-9
        if self.settings.use_receive_time:
            return stamp, None
        s = self.settings
        fault = stamp_fault(stamp, now, max_age_s=s.input_timeout_s, max_lead_s=s.max_stamp_lead_s)
        what = "frames" if which in ("head", "hand") else "messages"
        for cause in STAMP_FAULTS:
            if not self._flipped(f"{cause}:{which}", fault == cause):
                continue
            if fault != cause:
                self.get_logger().info(f"{INPUT_LABELS[which]} stamps are sane again")
                continue
            offset = now - stamp
            when = (
                "unset (zero)"
                if stamp == 0
                else f"{abs(offset):.3f} s {'behind' if offset > 0 else 'ahead of'} the node clock"
            )
            self.get_logger().warning(
                f"[{cause}] {INPUT_LABELS[which]} {what} are stamped {when}; not used"
                + (", robot stopped" if which in self.required_inputs() else "")
                + " (use_receive_time:=true for a driver whose clock is not synchronised)"
            )
        if fault is not None:
            self._count(fault, f"{INPUT_LABELS[which]} header stamp {stamp:.3f} vs node clock {now:.3f}", log=False)
            self.monitors[which].fault(now, f"{fault}: header stamp {stamp:.3f}, node clock {now:.3f}")
        return stamp, fault

    def camera_frames(self, latest: dict[str, Latest | None]) -> dict[str, np.ndarray | None]:
        """Each camera's frame at the model's input size, (S, S, 3) uint8 RGB; converted once per message
        (``frame_at_size``). A message that cannot be decoded is counted and dropped, so the input reads as missing
        (the robot stops if it is required); its entry is None."""
        out: dict[str, np.ndarray | None] = {}
        for which, item in latest.items():
            cached = self._frames.get(which)
            if item is None:
                out[which] = None
            elif cached is not None and cached[0] == item.seq:
                out[which] = cached[1]
            else:
                try:
                    rgb: np.ndarray | None = frame_at_size(item.value, self.engine.config.image_size)
                except ImageConversionError as exc:
                    self._count("bad_image", f"{INPUT_LABELS[which]}: {exc}")
                    self.monitors[which].fault(self.now(), str(exc))
                    with self._lock:
                        if self._inputs.get(which) is item:
                            del self._inputs[which]
                    out[which] = None
                    continue
                fault = self._frame_check.content_fault(rgb)
                if fault is None:
                    self._frame_ok(which)
                else:
                    self._frame_fault(which, *fault)
                    rgb = None
                out[which] = rgb
                self._frames[which] = (item.seq, rgb)
        return out

    def _frame_fault(self, which: str, cause: str, reason: str) -> None:
        """A frame with nothing to drive on (``robovlm.runtime.frame_check``): counted, shown in the camera's
        diagnostics, and, for a required camera, the robot held at zero (``degenerate_image``) until a usable frame
        of that camera arrives. The chunks planned before it are dropped, so the robot never resumes on them."""
        now = self.now()
        self._count(cause, f"{INPUT_LABELS[which]}: {reason}", log=False)
        self.monitors[which].fault(now, f"{cause}: {reason}")
        required = which in self.required_inputs()
        with self._lock:
            begins = which not in self._frame_faults
            self._frame_faults[which] = cause
            if begins and required:
                self._epoch += 1
        if begins and required and self.scheduler is not None:
            self.scheduler.reset()
        if self._flipped(f"frame:{which}", True):
            self.get_logger().warning(
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
        if self._flipped(f"frame:{which}", False):
            self.get_logger().info(f"{INPUT_LABELS[which]} frames are usable again")

    # ----------------------------------------------------------------------------------------------- joints
    def _on_joint_state(self, msg: JointState) -> None:
        now = self.now()
        try:
            vec = joint_state_vector(msg, self.settings.state_joints)
        except JointStateError as exc:
            self._count("bad_joint_state", str(exc))
            self.monitors["state"].fault(now, str(exc))
            return
        stamp, fault = self._check_stamp("state", msg.header.stamp, now)
        self._store("state", vec, now, stamp, fault)

    def _store(self, key: str, value: Any, now: float, stamp: float | None = None, fault: str | None = None) -> None:
        with self._lock:
            prev = self._inputs.get(key)
            self._inputs[key] = Latest(value, now, (prev.seq + 1) if prev else 0, stamp, fault)
        self.monitors[key].arrived(now)

    def required_inputs(self) -> list[str]:
        req = ["head"]
        if self.engine is not None and self.engine.uses_hand and self.settings.require_hand_camera:
            req.append("hand")
        if self.engine is not None and self.engine.uses_state:
            req.append("state")
        return req

    def input_ages(self, now: float) -> dict[str, float | None]:
        with self._lock:
            return {k: (now - self._inputs[k].rx_time) if k in self._inputs else None for k in self.required_inputs()}

    def stamp_hold(self) -> str | None:
        """A stamp fault on the newest message of a required input, which stops the robot while it lasts."""
        required = self.required_inputs()
        with self._lock:
            return self._stamp_fault_locked(required)

    def _stamp_fault_locked(self, required: list[str]) -> str | None:
        """The first stamp fault among ``required`` inputs; the caller holds ``_lock``."""
        for key in required:
            latest = self._inputs.get(key)
            if latest is not None and latest.fault is not None:
                return latest.fault
        return None

    def input_fault(self, key: str) -> str | None:
        """The fault of one input's newest message (stamp) or frames (``robovlm.runtime.frame_check``), or None."""
        with self._lock:
            latest = self._inputs.get(key)
            if latest is not None and latest.fault is not None:
                return latest.fault
            return self._frame_faults.get(key)

    def input_hold(self) -> str | None:
        """What stops the robot in its inputs: a stamp fault, or a required camera's frames with nothing to drive
        on (``degenerate_image``) until one of its frames is usable again."""
        required = self.required_inputs()  # once per control tick: one pass under one lock
        with self._lock:
            fault = self._stamp_fault_locked(required)
            if fault is None and any(key in self._frame_faults for key in required):
                fault = "degenerate_image"
        return fault

    # ----------------------------------------------------------------------------------------------- instruction
    def _on_set_parameters(self, params: list) -> SetParametersResult:
        """Types, ranges and read-only are enforced by the descriptors; ``instruction`` is the one parameter that
        changes at runtime (``RUNTIME_CHANGEABLE``), applied here. ``use_sim_time`` (rclpy's own) is refused while
        the node is configured: the control loop's deadlines, the watchdog and every stamp check run on one clock,
        and switching it under a moving robot would jam the loop or compare times of two clocks."""
        for p in params:
            if (
                p.name == "use_sim_time"
                and self.settings is not None
                and p.value != self.get_parameter("use_sim_time").value
            ):
                reason = (
                    "parameter 'use_sim_time' is fixed while the node is configured (the control loop and "
                    "every stamp check run on one clock): set it at start-up, or clean up the node first"
                )
                self._count("parameter_refused", reason)
                return SetParametersResult(successful=False, reason=reason)
            if p.name == "instruction":
                error = self._set_instruction(p.value, source="parameter")
                if error:
                    return SetParametersResult(successful=False, reason=error)
        return SetParametersResult(successful=True)

    def check_instruction(self, text: str) -> str | None:
        """The reason ``text`` is refused, or None. Before configure there is no tokenizer: configure checks it."""
        if self._tokenizer is None:
            return None
        try:
            count_instruction_tokens(self._tokenizer, text, self.engine.config.backbone.max_instruction_tokens)
        except InstructionTooLong as exc:
            return str(exc)
        return None

    def _set_instruction(self, text: str, *, source: str) -> str | None:
        """Take a new instruction, or refuse it (returns the reason) and stop until a valid one arrives.

        Any change starts a new task: the action chunks of the previous instruction are dropped."""
        text = text.strip()
        error = self.check_instruction(text)
        with self._lock:
            changed = text != self._instruction or error != self._instruction_error
            if error:
                self._instruction, self._instruction_error = "", error
            else:
                self._instruction, self._instruction_error = text, None
            if changed:
                self._epoch += 1
        if error:
            self._count(
                "instruction_refused", f"instruction from {source}: {error}; stopped until a valid instruction arrives"
            )
        if changed:
            self._instruction_source, self._instruction_t = source, self.now()
            if self.scheduler is not None:
                self.scheduler.reset()
            if not error:
                shown = text if len(text) <= 120 else text[:117] + "..."
                self.get_logger().info(f"instruction from {source}: {shown!r}", throttle_duration_sec=1.0)
        return error
