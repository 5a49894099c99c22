"""The step protocol between a robot (``RemoteEngine``) and ``robovlm serve``: typed, versioned msgpack messages
over HTTP, no pickle.

Why msgpack over HTTP: Ray Serve's HTTP ingress batches and routes it as it is, a robot needs nothing but the Python
standard library and msgpack to speak it, and a message is a map of a few fields and raw byte strings, so encoding
costs a copy (``bench/results/serve.md`` measures the round trip). Arrays travel as ``{"dtype", "shape", "data"}``
with a fixed set of dtypes; every field is checked against the model the server runs (image size, feature width,
window length, joint count) before anything is computed, and a message that fails gets ``WireError`` naming the
field, which the server answers with 400.

Stateless streaming: the robot keeps its window of per-frame features (``window``, kilobytes) and sends it with each
step; the server returns the newest frame's ``feature`` and the action chunk. Any replica can answer any step.
"""

from __future__ import annotations

import hashlib
import math
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

PROTOCOL = 1
"""Bumped when a message changes shape; a request of another version gets 400 naming both."""
CONTENT_TYPE = "application/msgpack"
MAX_REQUEST_BYTES = 4 * 2**20
"""Default request size limit: two raw 224 px frames are 301 kB; a window of 16 features of 2048 floats 131 kB."""
_DTYPES = {"<f4": np.float32, "<f2": np.float16, "|u1": np.uint8}
FRAME_FORMATS = ("raw", "jpeg")


class WireError(ValueError):
    """A message that does not follow the protocol (or does not fit the model served); the text names the field."""


def read_token(path: str | Path) -> str:
    """The bearer token from ``path`` (one line; never from the command line, where ``ps`` shows it to everyone).
    Raises ``WireError`` for a missing, unreadable, empty or group/world-readable file."""
    p = Path(path)
    try:
        mode = p.stat().st_mode
        token = p.read_text().strip()
    except OSError as exc:
        raise WireError(f"token file {p}: cannot read it ({exc.strerror or exc})") from exc
    if not token or any(c.isspace() for c in token):
        raise WireError(f"token file {p}: must hold one token on one line, without spaces")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise WireError(f"token file {p}: readable by other users (mode {stat.S_IMODE(mode):o}); chmod 600 {p}")
    return token


def token_digest(token: str) -> bytes:
    """What the server keeps and compares (``hmac.compare_digest``), so the token itself is not held in memory
    dumps or Ray's object store."""
    return hashlib.sha256(token.encode()).digest()


def checkpoint_id(path: str | Path) -> str:
    """A short fingerprint of a checkpoint (config, stats, weights' size): a robot whose window of features came from
    one checkpoint must not continue it on another after a server restart."""
    p = Path(path)
    h = hashlib.sha256()
    for name in ("config.json", "stats.json"):
        h.update((p / name).read_bytes())
    for name in ("model.safetensors", os.path.join("onnx", "manifest.json")):
        if (p / name).is_file():
            h.update(str((p / name).stat().st_size).encode())
    return h.hexdigest()[:16]


# ------------------------------------------------------------------------------------------------------ arrays
def pack_array(a: np.ndarray) -> dict[str, Any]:
    a = np.ascontiguousarray(a)
    dtype = a.dtype.newbyteorder("<") if a.dtype.byteorder == ">" else a.dtype
    if dtype.str not in _DTYPES:
        raise WireError(f"dtype {a.dtype} cannot travel on the wire (one of {sorted(_DTYPES)})")
    return {"dtype": dtype.str, "shape": list(a.shape), "data": a.astype(dtype, copy=False).tobytes()}


def unpack_array(obj: Any, name: str, *, dtype: type | None = None, shape: tuple[int | None, ...]) -> np.ndarray:
    """The array in ``obj``; ``shape`` gives each dimension (None: any length). Raises ``WireError`` naming ``name``."""
    if not isinstance(obj, dict) or set(obj) != {"dtype", "shape", "data"}:
        raise WireError(f"{name}: expected an array {{dtype, shape, data}}")
    kind, dims, data = obj["dtype"], obj["shape"], obj["data"]
    if kind not in _DTYPES or (dtype is not None and _DTYPES[kind] is not dtype):
        raise WireError(f"{name}: dtype {kind!r} not accepted here")
    if not isinstance(dims, list) or len(dims) != len(shape) or not all(isinstance(d, int) and d >= 0 for d in dims):
        raise WireError(f"{name}: shape {dims!r} is not of rank {len(shape)}")
    for got, want in zip(dims, shape):
        if want is not None and got != want:
            raise WireError(f"{name}: shape {dims} where {['any' if w is None else w for w in shape]} is expected")
    if not isinstance(data, bytes) or len(data) != math.prod(dims) * np.dtype(_DTYPES[kind]).itemsize:
        raise WireError(f"{name}: {len(data) if isinstance(data, bytes) else type(data).__name__} bytes for {dims}")
    out: np.ndarray = np.frombuffer(data, dtype=_DTYPES[kind]).reshape(dims).copy()  # writable: torch owns it
    if out.dtype.kind == "f" and not np.isfinite(out).all():
        raise WireError(f"{name}: non-finite values")
    return out


def encode_frame(rgb: np.ndarray, jpeg_quality: int | None) -> dict[str, Any]:
    """One (S, S, 3) uint8 RGB frame, already at the model's size: raw, or JPEG at ``jpeg_quality`` (1-100)."""
    if jpeg_quality is None:
        return {"format": "raw", "image": pack_array(rgb)}
    import cv2

    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
    if not ok:
        raise WireError("JPEG encoding failed")
    return {"format": "jpeg", "image": buf.tobytes()}


def decode_frame(obj: Any, name: str, size: int) -> np.ndarray:
    """A frame from the wire -> (size, size, 3) uint8 RGB; a frame of another size is refused (the robot resizes)."""
    if not isinstance(obj, dict) or obj.get("format") not in FRAME_FORMATS:
        raise WireError(f"{name}: expected a frame {{format: raw|jpeg, image}}")
    if obj["format"] == "raw":
        return unpack_array(obj.get("image"), name, dtype=np.uint8, shape=(size, size, 3))
    from ..utils.images import ImageError, compressed_image_size, decode_compressed_image

    if not isinstance(obj.get("image"), bytes):
        raise WireError(f"{name}: a JPEG frame needs its bytes")
    try:  # the header first, as the node checks camera messages: a huge frame is refused before it is decoded
        fmt, w, h = compressed_image_size(obj["image"])
        if fmt != "JPEG" or (w, h) != (size, size):
            raise WireError(f"{name}: {fmt} of {w}x{h} where the model takes a {size}x{size} JPEG; refused unread")
        rgb = decode_compressed_image("jpeg", obj["image"])
    except ImageError as exc:
        raise WireError(f"{name}: {exc}") from exc
    if rgb.shape != (size, size, 3):
        raise WireError(f"{name}: JPEG of {rgb.shape[1]}x{rgb.shape[0]} where the model takes {size}x{size}")
    return rgb


# ---------------------------------------------------------------------------------------------------- messages
@dataclass(frozen=True)
class ModelShape:
    """What a step request must fit: the served model's sizes (from ``/v1/info``)."""

    image_size: int
    width: int
    window_size: int
    state_dim: int | None  # None: the model takes no joint state
    uses_hand: bool


@dataclass
class StepRequest:
    """One robot's step: its newest frames and joint state, the instruction, and its window of earlier features
    (oldest first, at most ``window_size - 1``; empty at the start of a stream or after an instruction change)."""

    instruction: str
    head: np.ndarray  # (S, S, 3) uint8
    hand: np.ndarray | None  # (S, S, 3) uint8; None: missing (the model's marker)
    state: np.ndarray | None  # (J,) float32, raw joint values
    window: np.ndarray  # (t, D) float32
    model: str = ""  # the checkpoint id the window belongs to ("" at the start: any)
    robot: str = ""  # for the server's logs

    def encode(self, jpeg_quality: int | None = None) -> bytes:
        msg = {
            "v": PROTOCOL,
            "robot": self.robot,
            "model": self.model,
            "instruction": self.instruction,
            "head": encode_frame(self.head, jpeg_quality),
            "hand": None if self.hand is None else encode_frame(self.hand, jpeg_quality),
            "state": None if self.state is None else pack_array(np.asarray(self.state, np.float32)),
            "window": pack_array(np.asarray(self.window, np.float32)),
        }
        return _pack(msg)

    @classmethod
    def decode(cls, data: bytes, shape: ModelShape, *, max_bytes: int = MAX_REQUEST_BYTES) -> StepRequest:
        msg = _unpack(data, max_bytes)
        fields = {"v", "robot", "model", "instruction", "head", "hand", "state", "window"}
        if set(msg) != fields:
            raise WireError(f"step request: fields {sorted(msg)}, expected {sorted(fields)}")
        instruction = msg["instruction"]
        if not isinstance(instruction, str) or not instruction.strip() or len(instruction) > 2000:
            raise WireError("instruction: a non-empty string of at most 2000 characters")
        if not isinstance(msg["robot"], str) or not isinstance(msg["model"], str):
            raise WireError("robot and model: strings")
        if shape.state_dim is None:
            state = None
        elif msg["state"] is None:
            raise WireError(f"state: the model takes {shape.state_dim} joint values")
        else:
            state = unpack_array(msg["state"], "state", dtype=np.float32, shape=(shape.state_dim,))
        window = unpack_array(msg["window"], "window", dtype=np.float32, shape=(None, shape.width))
        if window.shape[0] >= shape.window_size:
            raise WireError(f"window: {window.shape[0]} features, at most {shape.window_size - 1} (window_size)")
        head = decode_frame(msg["head"], "head", shape.image_size)
        hand = (
            None if msg["hand"] is None or not shape.uses_hand else decode_frame(msg["hand"], "hand", shape.image_size)
        )
        return cls(instruction, head, hand, state, window, msg["model"], msg["robot"])


@dataclass
class StepReply:
    """The newest frame's feature (append it to the window) and its action chunk in physical units, with where the
    time went on the server."""

    feature: np.ndarray  # (D,) float32
    chunk: np.ndarray  # (n, A) float32
    model: str
    timing: dict[str, Any] = field(default_factory=dict)
    """server_ms (receipt to reply), compute_ms (the batch's engine call), batch_size, replica, cache_hit."""

    def encode(self) -> bytes:
        msg = {
            "v": PROTOCOL,
            "feature": pack_array(self.feature.astype(np.float32)),
            "chunk": pack_array(self.chunk.astype(np.float32)),
            "model": self.model,
            "timing": self.timing,
        }
        return _pack(msg)

    @classmethod
    def decode(cls, data: bytes, *, width: int, chunk_shape: tuple[int, int]) -> StepReply:
        msg = _unpack(data, MAX_REQUEST_BYTES)
        try:
            return cls(
                unpack_array(msg["feature"], "feature", dtype=np.float32, shape=(width,)),
                unpack_array(msg["chunk"], "chunk", dtype=np.float32, shape=chunk_shape),
                str(msg["model"]),
                dict(msg["timing"]),
            )
        except (KeyError, TypeError) as exc:
            raise WireError(f"step reply: {type(exc).__name__} {exc}") from exc


def _pack(msg: dict[str, Any]) -> bytes:
    data: bytes = msgpack.packb(msg, use_bin_type=True)
    return data


def _unpack(data: bytes, max_bytes: int) -> dict[str, Any]:
    if len(data) > max_bytes:
        raise WireError(f"message of {len(data)} bytes, the limit is {max_bytes}")
    try:
        msg = msgpack.unpackb(data, raw=False, strict_map_key=True, max_bin_len=max_bytes, max_str_len=max_bytes)
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise WireError(f"not a msgpack message ({type(exc).__name__}: {exc})") from exc
    if not isinstance(msg, dict):
        raise WireError("expected a msgpack map")
    if msg.get("v") != PROTOCOL:
        raise WireError(f"protocol version {msg.get('v')!r}; this side speaks {PROTOCOL}")
    return msg


def encode_info(info: dict[str, Any]) -> bytes:
    return _pack({"v": PROTOCOL, **info})


def decode_info(data: bytes) -> dict[str, Any]:
    return _unpack(data, MAX_REQUEST_BYTES)
