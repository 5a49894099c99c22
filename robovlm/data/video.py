"""Video for LeRobotDataset files, through PyAV (its wheels bundle an AV1 encoder, libsvtav1, and decoder, dav1d).

``read_frames`` decodes the frames of one episode from a video file many episodes share: it seeks to the keyframe
before the first one and decodes forward, so each frame is decoded once (seeking per training sample would starve two
cores). ``VideoWriter`` appends frames to one file, as LeRobot writes them (``libsvtav1``, ``yuv420p``, a keyframe
every 2 frames, crf 30; H.264 as an option).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from ..utils.images import resize_rgb
from .errors import EpisodeError

TOLERANCE_S = 1e-4
"""LeRobot's tolerance between a frame's time and the time asked for."""
CODECS = {"av1": "libsvtav1", "h264": "libx264"}


def read_frames(path: Path, times: Sequence[float], *, size: int | None = None) -> np.ndarray:
    """(N, H, W, 3) uint8 RGB: the frame of ``path`` at each of ``times`` (seconds, ascending), resized to
    (size, size) when given. A time with no frame within ``TOLERANCE_S`` is an ``EpisodeError`` naming it."""
    if not len(times):
        raise EpisodeError(f"{path}: no frame times asked for")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as exc:
        raise EpisodeError(f"{path}: cannot open video: {exc}") from exc
    out: list[np.ndarray] = []
    with container:
        stream = container.streams.video[0]
        base = stream.time_base or Fraction(1, 1_000_000)
        container.seek(max(0, int(times[0] / base) - 1), stream=stream, backward=True, any_frame=False)
        want = 0
        for frame in container.decode(stream):
            t = float(frame.pts * base) if frame.pts is not None else float(frame.time or 0.0)
            while want < len(times) and times[want] < t - TOLERANCE_S:  # asked for a time this file skipped
                raise EpisodeError(
                    f"{path}: no frame at {times[want]:.4f} s (the next one is at {t:.4f} s; tolerance {TOLERANCE_S} s)"
                )
            if want < len(times) and abs(t - times[want]) <= TOLERANCE_S:
                rgb = frame.to_ndarray(format="rgb24")
                out.append(resize_rgb(rgb, size) if size else rgb)
                want += 1
                if want == len(times):
                    break
    if want < len(times):
        raise EpisodeError(f"{path}: the video ends before {times[want]:.4f} s ({want} of {len(times)} frames found)")
    return np.stack(out)


class VideoWriter:
    """Frames appended to one video file at ``fps``; ``frames`` counts them (the next one's time is frames / fps)."""

    def __init__(self, path: Path, *, fps: int, width: int, height: int, codec: str = "av1") -> None:
        if codec not in CODECS:
            raise ValueError(f"video codec must be one of {sorted(CODECS)}, got {codec!r}")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.frames = 0
        self._container = av.open(str(path), mode="w")
        options = {"g": "2", "crf": "30"}
        if codec == "av1":
            options["preset"] = "12"  # the fastest: two CPU cores
            # SVT-AV1 prints some 25 lines to stderr for every file it opens; only its errors, unless the user set it
            os.environ.setdefault("SVT_LOG", "1")
        stream = self._container.add_stream(CODECS[codec], rate=fps, options=options)
        assert isinstance(stream, av.video.stream.VideoStream)
        self._stream = stream
        self._stream.width, self._stream.height, self._stream.pix_fmt = width, height, "yuv420p"

    def add(self, rgb: np.ndarray) -> None:
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb, np.uint8), format="rgb24")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()


def video_info(path: Path) -> dict[str, object]:
    """The ``info`` block LeRobot keeps per video feature in ``meta/info.json``."""
    with av.open(str(path)) as container:
        s = container.streams.video[0]
        return {
            "video.height": s.height,
            "video.width": s.width,
            "video.codec": s.codec_context.codec.canonical_name if s.codec_context else s.codec.name,
            "video.pix_fmt": s.pix_fmt,
            "video.is_depth_map": False,
            "video.fps": int(s.base_rate or s.average_rate or 0),
            "video.channels": 3,
            "has_audio": bool(container.streams.audio),
        }
