"""ROS message <-> NumPy.

Images use the real ``cv_bridge`` when it is importable (ROS installs, the Docker image); otherwise a NumPy/OpenCV
path that covers rgb8, bgr8, rgba8, bgra8, mono8 and JPEG/PNG ``CompressedImage``s and honours the row ``step``
(rows may be padded). Every malformed message raises ``ImageConversionError`` with the reason; nothing here crashes
the caller's loop.
"""

from __future__ import annotations

import math

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Twist, TwistStamped
from sensor_msgs.msg import CompressedImage, Image, JointState

from robovlm.utils.images import (
    ImageError,
    ImageTooLarge,
    check_raw_image,
    compressed_image_size,
    decode_compressed_image,
    decode_raw_image,
    resize_rgb,
)

try:  # the real bridge when ROS provides it
    from cv_bridge import CvBridge, CvBridgeError

    _BRIDGE: CvBridge | None = CvBridge()
except ImportError:  # pip-only installs: the NumPy/OpenCV path below
    _BRIDGE = None
    CvBridgeError = RuntimeError

TWIST_FIELDS = ("linear.x", "linear.y", "linear.z", "angular.x", "angular.y", "angular.z")


class ImageConversionError(ValueError):
    """A camera message cannot be turned into an RGB image; the message says why."""


class JointStateError(ValueError):
    """A joint-state message lacks a configured joint, names one twice or holds a non-finite position."""


def time_from_ns(ns: int) -> Time:
    """Integer nanoseconds (a ROS clock's) -> ``builtin_interfaces/Time``."""
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def check_image_size(msg: Image | CompressedImage, max_pixels: int) -> tuple[int, int]:
    """(width, height) from the message header (raw) or the JPEG/PNG header (compressed), without decoding pixels;
    ``ImageConversionError`` when the frame has more than ``max_pixels`` or its header is unreadable or does not
    match its data (raw: encoding, row step, length)."""
    if isinstance(msg, CompressedImage):
        try:
            _, w, h = compressed_image_size(msg.data)
        except ImageTooLarge as exc:
            raise ImageConversionError(
                f"compressed frame is larger than max_image_pixels={max_pixels} ({exc}); refused before decoding"
            ) from exc
        except ImageError as exc:
            raise ImageConversionError(str(exc)) from exc
    else:
        w, h = int(msg.width), int(msg.height)
        if w * h <= max_pixels:
            try:
                check_raw_image(msg.encoding, msg.height, msg.width, msg.step, len(msg.data))
            except ImageError as exc:
                raise ImageConversionError(str(exc)) from exc
    if w * h > max_pixels:
        raise ImageConversionError(
            f"frame of {w}x{h} = {w * h} pixels is larger than max_image_pixels={max_pixels}; refused before decoding"
        )
    return w, h


def image_to_rgb(msg: Image, *, use_bridge: bool = True) -> np.ndarray:
    """``sensor_msgs/Image`` -> (H, W, 3) uint8 RGB."""
    if use_bridge and _BRIDGE is not None:
        try:
            return np.ascontiguousarray(_BRIDGE.imgmsg_to_cv2(msg, desired_encoding="rgb8"))
        except (CvBridgeError, TypeError, ValueError) as exc:
            raise ImageConversionError(f"cv_bridge could not convert the image: {exc}") from exc
    try:
        return decode_raw_image(msg.encoding, msg.height, msg.width, msg.step, msg.data)
    except ImageError as exc:
        raise ImageConversionError(str(exc)) from exc


def frame_at_size(msg: Image | CompressedImage, size: int) -> np.ndarray:
    """A camera message -> (size, size, 3) uint8 RGB, the model's input. Raw frames are resized straight from the
    message buffer (``decode_raw_image(size=)``), so a full-size frame is never copied."""
    if isinstance(msg, CompressedImage):
        return resize_rgb(compressed_to_rgb(msg), size)
    if _BRIDGE is not None:
        return resize_rgb(image_to_rgb(msg), size)
    try:
        return decode_raw_image(msg.encoding, msg.height, msg.width, msg.step, msg.data, size=size)
    except ImageError as exc:
        raise ImageConversionError(str(exc)) from exc


def compressed_to_rgb(msg: CompressedImage, *, use_bridge: bool = True) -> np.ndarray:
    """``sensor_msgs/CompressedImage`` (JPEG or PNG) -> (H, W, 3) uint8 RGB."""
    fmt = msg.format.lower()
    if fmt and not any(k in fmt for k in ("jpeg", "jpg", "png")):
        raise ImageConversionError(f"unsupported compressed format {msg.format!r} (JPEG or PNG only)")
    if use_bridge and _BRIDGE is not None:
        try:
            return np.ascontiguousarray(_BRIDGE.compressed_imgmsg_to_cv2(msg, desired_encoding="rgb8"))
        except (CvBridgeError, TypeError, ValueError) as exc:
            raise ImageConversionError(f"cv_bridge could not decode the image: {exc}") from exc
    try:
        return decode_compressed_image(msg.format, msg.data)
    except ImageError as exc:
        raise ImageConversionError(str(exc)) from exc


def rgb_to_image(rgb: np.ndarray, *, stamp: Time | None = None, frame_id: str = "", encoding: str = "rgb8") -> Image:
    """(H, W, 3) uint8 RGB -> ``sensor_msgs/Image`` in ``rgb8`` or ``bgr8``."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
    if encoding not in ("rgb8", "bgr8"):
        raise ValueError(f"encoding must be rgb8 or bgr8, got {encoding!r}")
    data = rgb if encoding == "rgb8" else rgb[:, :, ::-1]
    msg = Image()
    if stamp is not None:
        msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(rgb.shape[0]), int(rgb.shape[1])
    msg.encoding, msg.is_bigendian, msg.step = encoding, 0, int(rgb.shape[1] * 3)
    msg.data = np.ascontiguousarray(data).tobytes()
    return msg


def rgb_to_compressed(rgb: np.ndarray, *, fmt: str = "jpeg", stamp: Time | None = None) -> CompressedImage:
    import cv2

    ok, buf = cv2.imencode(".jpg" if fmt == "jpeg" else ".png", np.ascontiguousarray(rgb[:, :, ::-1]))
    if not ok:
        raise ValueError(f"could not encode {fmt}")
    msg = CompressedImage()
    if stamp is not None:
        msg.header.stamp = stamp
    msg.format = fmt
    msg.data = buf.tobytes()
    return msg


def joint_state_vector(msg: JointState, names: list[str]) -> np.ndarray:
    """Positions of ``names``, in that order; a missing name, a name given twice (which of its values would be
    the joint's?) or a non-finite value is a ``JointStateError``."""
    if len(msg.position) != len(msg.name):
        raise JointStateError(f"joint state has {len(msg.name)} names but {len(msg.position)} positions")
    index = {n: i for i, n in enumerate(msg.name)}
    if len(index) != len(msg.name):
        twice = sorted({n for n in msg.name if list(msg.name).count(n) > 1})
        raise JointStateError(f"joint state names {twice} more than once; refused (which value is the joint's?)")
    missing = [n for n in names if n not in index]
    if missing:
        raise JointStateError(f"joint state lacks {missing} (has {list(msg.name)}); check 'state_joints'")
    with np.errstate(over="ignore"):  # beyond float32 becomes inf, refused just below with its value
        vec = np.array([msg.position[index[n]] for n in names], dtype=np.float32)
    if not np.all(np.isfinite(vec)):
        raise JointStateError(f"non-finite joint positions {dict(zip(names, vec.tolist()))}")
    return vec


def make_twist(
    command: np.ndarray, fields: list[str], *, stamped: bool, stamp: Time | None = None, frame_id: str = "base_link"
) -> Twist | TwistStamped:
    """Put ``command[i]`` into Twist field ``fields[i]`` (e.g. 'linear.x'); other fields stay zero."""
    twist = Twist()
    for value, name in zip(command, fields):
        part, axis = name.split(".")
        v = float(value)
        setattr(getattr(twist, part), axis, v if math.isfinite(v) else 0.0)
    if not stamped:
        return twist
    msg = TwistStamped()
    if stamp is not None:
        msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.twist = twist
    return msg


def twist_fields(msg: Twist | TwistStamped, fields: list[str]) -> np.ndarray:
    """The inverse of ``make_twist``: (len(fields),) float64 of ``msg``'s fields (e.g. an operator's teleop command);
    a non-finite value is refused (``ValueError``), as the node's own commands are never non-finite."""
    twist = msg.twist if isinstance(msg, TwistStamped) else msg
    out = np.array([getattr(getattr(twist, name.split(".")[0]), name.split(".")[1]) for name in fields], np.float64)
    if not np.all(np.isfinite(out)):
        raise ValueError(f"operator command is not finite: {out.tolist()}")
    return out
