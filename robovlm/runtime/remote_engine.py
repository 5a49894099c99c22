"""``RemoteEngine``: the model runs on a server (``robovlm serve``), the robot keeps its stream.

Same interface and semantics as the local engines: frames and joint state in, the chunk in physical units out; a new
instruction starts a new window. What the local engines keep inside the model, the robot keeps here
(``RemoteStream``): the window of per-frame features, sent with each step, so any replica can answer any step.
Frames are resized on the robot to the model's size (``resize_rgb``, the pixels the model sees everywhere) and sent
raw or as JPEG.

A server that is down, slow (``timeout_s``) or restarting raises ``EngineUnavailable``: the node holds the robot at
zero and steps again after a backoff (0.25 s doubling to 4 s), and the stream starts over (features from before a
gap are not continued). A reply from another checkpoint (the server restarted with a new model) starts the stream
over too. A step the server refuses (400, 413, 422: an instruction too long for the model, a missing frame the
model needs) is ``RemoteStepRefused`` with the server's reason: the robot is held and the next step may pass. A
refused token (401) is an ``EngineError``: no retry makes it right.

The transport is the standard library's ``http.client`` on one kept-alive connection; the robot needs no Ray.
"""

from __future__ import annotations

import http.client
import logging
import socket
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from ..configs.model import ConfigError, RoboVLMConfig
from ..data.stats import NormStats, StatsError
from ..model.policy import MissingInputError
from ..model.tokenizer import load_tokenizer
from ..utils.images import resize_rgb
from .engine import EngineBase, EngineError, EngineUnavailable
from .wire import CONTENT_TYPE, StepReply, StepRequest, WireError, decode_info, read_token

log = logging.getLogger(__name__)

BACKOFF_S = (0.25, 4.0)
"""First and largest wait before trying an unreachable server again."""


class RemoteStepRefused(ValueError):
    """The server refused one step (400, 413, 422): its reason is in the message; the next step may be fine."""


class RemoteStream:
    """The robot's side of a stream: the instruction, the window of earlier features and the checkpoint they came
    from. ``request`` builds the next step, ``accept`` takes its reply."""

    def __init__(self, window_size: int, robot: str = "") -> None:
        self.window: deque[np.ndarray] = deque(maxlen=max(window_size - 1, 0))
        self.instruction: str | None = None
        self.model = ""
        self.robot = robot
        self._width: int | None = None

    def reset(self) -> None:
        self.window.clear()
        self.instruction = None
        self.model = ""

    def request(
        self, head: np.ndarray, hand: np.ndarray | None, state: np.ndarray | None, instruction: str, width: int
    ) -> StepRequest:
        if instruction != self.instruction:  # a new task: a new window (RoboVLM.step does the same)
            self.window.clear()
            self.instruction = instruction
        window = np.stack(self.window) if self.window else np.zeros((0, width), np.float32)  # (t, D)
        return StepRequest(instruction, head, hand, state, window, self.model, self.robot)

    def accept(self, reply: StepReply) -> np.ndarray:
        if self.model and reply.model != self.model:  # another checkpoint: these features mean nothing to it
            self.window.clear()
        self.model = reply.model
        if self.window.maxlen:
            self.window.append(reply.feature)
        return reply.chunk


@dataclass
class RemoteTiming:
    """The last step's round trip and where it went (diagnostics)."""

    round_trip_ms: float = float("nan")
    server_ms: float = float("nan")
    """From the request's arrival at the replica to its reply: the batch's wait and its compute."""
    compute_ms: float = float("nan")
    """The engine call of the batch this step was in."""
    network_ms: float = float("nan")
    """The round trip less ``server_ms``: the ingress's hops and the wire."""
    read_ms: float = float("nan")
    """Part of ``server_ms``: the replica reading the request's body (through Ray's proxy: pulled in Ray calls)."""
    batch_size: int = 0
    replica: str = ""
    request_bytes: int = 0


class RemoteEngine(EngineBase):
    def __init__(
        self,
        url: str,
        *,
        token_file: str,
        timeout_s: float = 1.0,
        jpeg_quality: int = 0,
        robot: str = "",
        connect_timeout_s: float | None = None,
    ) -> None:
        """``url``: ``http://HOST:PORT`` of ``robovlm serve`` (``https://`` behind a TLS proxy); ``timeout_s``: a step
        that takes longer counts as a lost server; ``jpeg_quality``: 0 sends raw pixels, 1-100 JPEG at that
        quality. The server must answer ``/v1/info`` within ``connect_timeout_s`` (default ``timeout_s`` + 4 s): the
        robot learns the model's sizes from it."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
            raise EngineError(f"server_url must be http://HOST:PORT or https://HOST:PORT, got {url!r}")
        if not (timeout_s > 0):
            raise EngineError(f"server_timeout_s must be positive, got {timeout_s}")
        if not (0 <= jpeg_quality <= 100):
            raise EngineError(f"jpeg_quality must be 0 (raw) or 1-100, got {jpeg_quality}")
        try:
            self._auth = f"Bearer {read_token(token_file)}"
        except WireError as exc:
            raise EngineError(f"server_token_file: {exc}") from exc
        self.url = f"{parts.scheme}://{parts.netloc}"
        self._https = parts.scheme == "https"
        self._host, self._port = parts.hostname, parts.port or (443 if self._https else 80)
        self.timeout_s = timeout_s
        self.jpeg_quality = jpeg_quality or None
        self._conn: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()  # one request at a time on the connection
        self._backoff = BACKOFF_S[0]
        self._retry_at = 0.0
        self.timing = RemoteTiming()
        info = self._info(connect_timeout_s if connect_timeout_s is not None else timeout_s + 4.0)
        try:
            self.config = RoboVLMConfig.from_dict(info["config"])
            self.stats = NormStats(**info["stats"])
            self.width = int(info["width"])
            self.model_id = str(info["model"])
        except (KeyError, TypeError, ValueError, ConfigError, StatsError) as exc:
            raise EngineError(f"{self.url}/v1/info: not a model description ({type(exc).__name__}: {exc})") from exc
        self.stream = RemoteStream(self.config.window_size, robot)
        # the robot checks an instruction's length itself when the tokenizer needs no files; else the server does
        self.tokenizer = load_tokenizer("bytes", None) if self.config.backbone.tokenizer == "bytes" else None
        self.name = "remote" + (f" (jpeg {jpeg_quality})" if jpeg_quality else "")
        self.device_name = f"{self.url} {info.get('device', '')}".strip()

    # ------------------------------------------------------------------------------------------------ transport
    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        if self._conn is None:
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            self._conn = cls(self._host, self._port, timeout=timeout)
        self._conn.timeout = timeout
        if self._conn.sock is not None:
            self._conn.sock.settimeout(timeout)
        return self._conn

    def _request(self, method: str, path: str, body: bytes | None, timeout: float) -> tuple[int, bytes]:
        """(status, body); ``OSError`` / ``http.client.HTTPException`` when the server cannot be reached in time."""
        headers = {"Authorization": self._auth, "Accept": CONTENT_TYPE}
        if body is not None:
            headers["Content-Type"] = CONTENT_TYPE
        with self._lock:
            conn = self._connection(timeout)
            try:
                conn.request(method, path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
            except (OSError, http.client.HTTPException):
                conn.close()  # a timed-out reply may still arrive: never read it as the next step's
                self._conn = None
                raise
            if resp.will_close:
                conn.close()
                self._conn = None
            return resp.status, data

    def _info(self, timeout: float) -> dict[str, Any]:
        try:
            status, data = self._request("GET", "/v1/info", None, timeout)
        except (OSError, http.client.HTTPException) as exc:
            raise EngineError(
                f"server {self.url} unreachable ({type(exc).__name__}: {exc}); is robovlm serve up?"
            ) from None
        if status != 200:
            raise EngineError(f"server {self.url}/v1/info answered {status}: {_reason(data)}")
        try:
            return decode_info(data)
        except WireError as exc:
            raise EngineError(f"server {self.url}/v1/info: {exc}") from exc

    # ------------------------------------------------------------------------------------------------ stepping
    def reset(self) -> None:
        self.stream.reset()

    def _unavailable(self, why: str) -> EngineUnavailable:
        wait = self._backoff
        self._retry_at = time.monotonic() + wait
        self._backoff = min(self._backoff * 2, BACKOFF_S[1])
        self.stream.reset()  # resume with a fresh window: the features from before the gap are stale
        return EngineUnavailable(f"server {self.url}: {why}; robot held, retrying in {wait:.2f} s", retry_after_s=wait)

    def step(
        self, head_rgb: np.ndarray, hand_rgb: np.ndarray | None, state: np.ndarray | None, instruction: str
    ) -> np.ndarray:
        """RGB uint8 (H, W, 3) frames, raw joint state (S,) -> (n, A) actions in physical units."""
        cfg = self.config
        wait = self._retry_at - time.monotonic()
        if wait > 0:
            raise EngineUnavailable(f"server {self.url}: backing off, next try in {wait:.2f} s", retry_after_s=wait)
        hand_ok = hand_rgb is not None and cfg.use_hand_rgb
        if cfg.use_hand_rgb and not hand_ok and cfg.missing_hand == "error":
            raise MissingInputError("a frame has no hand-camera image and missing_hand is 'error'")
        if cfg.use_state and state is None:
            raise ValueError("the model uses the joint state but none was given")
        size = cfg.image_size
        request = self.stream.request(
            resize_rgb(head_rgb, size),
            resize_rgb(hand_rgb, size) if hand_ok and hand_rgb is not None else None,
            None if not cfg.use_state else np.asarray(state, np.float32),
            instruction,
            self.width,
        )
        body = request.encode(self.jpeg_quality)
        t0 = time.perf_counter()
        try:
            status, data = self._request("POST", "/v1/step", body, self.timeout_s)
        except (OSError, http.client.HTTPException) as exc:
            kind = "no reply within server_timeout_s" if isinstance(exc, socket.timeout) else type(exc).__name__
            raise self._unavailable(f"{kind} ({exc})") from exc
        rtt = (time.perf_counter() - t0) * 1e3
        if status in (502, 503, 504) or status >= 500:
            raise self._unavailable(f"answered {status}: {_reason(data)}")
        if status == 401:  # a configuration fault: no retry makes the token right
            raise EngineError(f"server {self.url} refused the token of server_token_file (401): {_reason(data)}")
        if status != 200:  # this step cannot run (bad input, instruction too long): the robot is held, the loop goes on
            raise RemoteStepRefused(f"server {self.url} refused the step ({status}): {_reason(data)}")
        try:
            reply = StepReply.decode(data, width=self.width, chunk_shape=(cfg.fwd_pred_next_n, cfg.action_dim))
        except WireError as exc:
            raise self._unavailable(f"unreadable reply ({exc})") from exc
        self._backoff = BACKOFF_S[0]
        server_ms = float(reply.timing.get("server_ms", float("nan")))
        self.timing = RemoteTiming(
            round_trip_ms=rtt,
            server_ms=server_ms,
            compute_ms=float(reply.timing.get("compute_ms", float("nan"))),
            network_ms=rtt - server_ms,
            read_ms=float(reply.timing.get("read_ms", float("nan"))),
            batch_size=int(reply.timing.get("batch_size", 0)),
            replica=str(reply.timing.get("replica", "")),
            request_bytes=len(body),
        )
        return self.stream.accept(reply)

    def remote_status(self) -> dict[str, Any]:
        """The last step's timing, for diagnostics."""
        return {"server": self.url, **asdict(self.timing)}

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def _reason(data: bytes) -> str:
    text = data[:300].decode("utf-8", "replace").strip()
    return text or "(no reason given)"
