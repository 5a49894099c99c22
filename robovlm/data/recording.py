"""Episodes inside long recordings (``--split-episodes``): robot teams record one bag per sitting, many
demonstrations separated by resets, not one bag per episode.

Boundary sources, as ``KIND:ARG`` (several separated by commas, tried in order):

- ``topic:NAME``: episode markers on a topic, ``std_msgs/Bool`` (true starts an episode, false ends it) or
  ``std_msgs/String`` (``start``/``begin``, ``end``/``stop``); a start while an episode is open ends it and starts
  the next; an episode still open at the end of the bag ends there;
- ``idle:SECONDS``: teleop idle gaps: a stretch of at least SECONDS without a non-zero command (every field within
  ``IDLE_EPS``; a command older than the reader's ``cmd_vel`` timeout counts as zero) separates episodes and belongs
  to none; pieces without any non-zero command are dropped;
- ``times:FILE``: start and end times, seconds from the bag's first message, as CSV (columns ``bag``, ``start``,
  ``end``; ``bag`` a name or glob) or YAML (``BAG: [[start, end], ...]``).

With several sources the first cuts where it has evidence (markers, rows for this bag) and the next cuts only the
frames the earlier ones left uncovered: ``topic:/episode_marker,idle:2`` uses the markers where they were recorded
and the idle gaps elsewhere. Episodes are named ``BAG#k`` (k from 0 in time order) and each gets its own instruction
(``robovlm.data.instructions``; on the instruction topic, the latest message at or before its last frame).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import yaml

from .errors import EpisodeError
from .hdf5 import Episode
from .instructions import INSTRUCTION_KEY, EpisodeTexts, InstructionSources

if TYPE_CHECKING:
    from .rollout import RolloutInfo
from .table_file import csv_rows, is_csv, read_text

IDLE_EPS = 1e-3
"""A command with every field within this (m/s, rad/s) is idle."""
MARKER_TYPES = ("std_msgs/msg/Bool", "std_msgs/msg/String")
_STARTS, _ENDS = {"start", "begin", "true"}, {"end", "stop", "false"}


@dataclass
class Timeline:
    """What a bag says besides its aligned frames: the instruction and marker messages with their receive times,
    its first message's time and its ``custom_data``."""

    start_ns: int
    instructions: list[tuple[int, str]] = field(default_factory=list)
    markers: list[tuple[int, bool]] = field(default_factory=list)
    custom_data: dict[str, str] = field(default_factory=dict)
    instruction_topic: str | None = None
    marker_topic: str | None = None
    rollout: RolloutInfo | None = None
    """A node's rollout recording (``robovlm.data.rollout``): its interventions and outcome; None for others."""


def marker_value(msgtype: str, msg: object, where: str) -> bool:
    """True for a start marker, False for an end marker."""
    data = getattr(msg, "data", None)
    if msgtype == "std_msgs/msg/Bool":
        return bool(data)
    text = str(data).strip().lower()
    if text in _STARTS:
        return True
    if text in _ENDS:
        return False
    raise EpisodeError(f"{where}: episode marker {data!r}; a String marker is 'start'/'begin' or 'end'/'stop'")


@dataclass(frozen=True)
class Cut:
    """Frames ``[start, stop)`` of a recording form one episode; ``how`` names the source that cut it."""

    start: int
    stop: int
    how: str


@dataclass(frozen=True)
class SplitSource:
    kind: str
    """topic | idle | times"""
    arg: str
    idle_s: float = 0.0
    times: tuple[tuple[str, float, float], ...] = ()

    def __str__(self) -> str:
        return f"{self.kind}:{self.arg}"

    def cuts(self, ep: Episode, timeline: Timeline, a: int, b: int) -> list[Cut]:
        """This source's episodes among frames ``[a, b)`` of the whole-bag episode ``ep``."""
        assert ep.frame_times_ns is not None
        t = ep.frame_times_ns[a:b]
        spans: list[tuple[int, int]] = []  # in time, inclusive
        if self.kind == "topic":
            open_at: int | None = None
            for when, start in timeline.markers:
                if open_at is not None:  # a frame received with the marker belongs to the next episode
                    spans.append((open_at, when - 1))
                open_at = when if start else None
            if open_at is not None:
                spans.append((open_at, int(ep.frame_times_ns[-1])))
        elif self.kind == "times":
            base = timeline.start_ns
            for pattern, start_s, end_s in self.times:
                if fnmatch.fnmatchcase(ep.name, pattern):
                    spans.append((base + int(start_s * 1e9), base + int(end_s * 1e9)))
        else:
            return self._idle(ep, a, b)
        out = []
        for lo, hi in spans:
            i, j = int(np.searchsorted(t, lo, side="left")), int(np.searchsorted(t, hi, side="right"))
            if j > i:
                out.append(Cut(a + i, a + j, str(self)))
        return out

    def _idle(self, ep: Episode, a: int, b: int) -> list[Cut]:
        idle = np.all(np.abs(ep.actions[a:b]) <= IDLE_EPS, axis=1)
        need = max(1, int(np.ceil(self.idle_s / ep.frame_dt - 1e-9)))  # frames an idle gap must span
        out, piece_start, i, n = [], 0, 0, len(idle)
        while i < n:
            if not idle[i]:
                i += 1
                continue
            j = i
            while j < n and idle[j]:
                j += 1
            if j - i >= need:  # a gap: the piece before it ends here
                if not idle[piece_start:i].all() and i > piece_start:
                    out.append(Cut(a + piece_start, a + i, str(self)))
                piece_start = j
            i = j
        if piece_start < n and not idle[piece_start:].all():
            out.append(Cut(a + piece_start, a + n, str(self)))
        return out


def _read_times(path: Path) -> tuple[tuple[str, float, float], ...]:
    text = read_text(path)
    rows: list[tuple[str, float, float]] = []
    try:
        if is_csv(path):
            for row in csv_rows(path, text, ("bag", "start", "end")):
                rows.append((row["bag"], float(row["start"]), float(row["end"])))
        else:
            data = yaml.safe_load(text)
            if not isinstance(data, dict):
                raise EpisodeError(f"{path}: YAML episode times map a bag name to a list of [start, end]")
            for bag, spans in data.items():
                for start, end in spans:
                    rows.append((str(bag), float(start), float(end)))
    except EpisodeError:
        raise
    except (ValueError, TypeError, yaml.YAMLError) as exc:
        raise EpisodeError(f"{path}: bad episode times ({exc})") from exc
    for bag, start, end in rows:
        if not 0 <= start < end:
            raise EpisodeError(f"{path}: episode of {bag} from {start} s to {end} s: need 0 <= start < end")
    return tuple(rows)


def parse_split(spec: str | None) -> list[SplitSource]:
    """``--split-episodes`` -> its sources, checked (an unknown kind or a bad value is an ``EpisodeError``)."""
    sources = []
    for item in [s.strip() for s in (spec or "").split(",") if s.strip()]:
        kind, sep, arg = item.partition(":")
        if not sep or not arg:
            raise EpisodeError(f"--split-episodes takes topic:NAME, idle:SECONDS or times:FILE, got {item!r}")
        if kind == "topic":
            sources.append(SplitSource("topic", arg if arg.startswith("/") else "/" + arg))
        elif kind == "idle":
            try:
                seconds = float(arg)
            except ValueError:
                seconds = -1.0
            if not seconds > 0:
                raise EpisodeError(f"--split-episodes idle:SECONDS needs SECONDS > 0, got {arg!r}")
            sources.append(SplitSource("idle", arg, idle_s=seconds))
        elif kind == "times":
            sources.append(SplitSource("times", arg, times=_read_times(Path(arg))))
        else:
            raise EpisodeError(f"--split-episodes: unknown kind {kind!r} in {item!r} (topic, idle or times)")
    if len([s for s in sources if s.kind == "topic"]) > 1:
        raise EpisodeError("--split-episodes: one marker topic at most")
    return sources


def marker_topic(sources: list[SplitSource]) -> str | None:
    return next((s.arg for s in sources if s.kind == "topic"), None)


def cut_recording(ep: Episode, timeline: Timeline, sources: list[SplitSource]) -> list[Cut]:
    """Where ``sources`` cut the whole-bag episode ``ep``, in time order; no sources: one cut, the whole bag."""
    if not sources:
        return [Cut(0, len(ep), "whole recording")]
    cuts: list[Cut] = []
    uncovered = [(0, len(ep))]
    for source in sources:
        new = [c for a, b in uncovered for c in source.cuts(ep, timeline, a, b)]
        cuts += new
        left = []
        for a, b in uncovered:  # what this source left uncovered, for the next one
            edge = a
            for c in sorted((c for c in new if a <= c.start < b), key=lambda c: c.start):
                if c.start > edge:
                    left.append((edge, c.start))
                edge = max(edge, c.stop)
            if edge < b:
                left.append((edge, b))
        uncovered = left
    return sorted(cuts, key=lambda c: c.start)


def episodes_of(
    ep: Episode, timeline: Timeline, sources: list[SplitSource], instructions: InstructionSources
) -> list[tuple[Episode, Cut]]:
    """The episodes of a whole-bag episode, each with its instruction found (``None`` if no source has one)."""
    cuts = cut_recording(ep, timeline, sources)
    out = []
    for k, c in enumerate(cuts):
        part = ep if not sources else ep.cut(c.start, c.stop, f"{ep.name}#{k}")
        assert part.frame_times_ns is not None
        last = int(part.frame_times_ns[-1])
        said = [text for when, text in timeline.instructions if when <= last]
        texts = EpisodeTexts(
            episode=part.name,
            recording=ep.name,
            scenario=part.scenario,
            topic=said[-1] if said else None,
            topic_name=timeline.instruction_topic,
            custom_data=timeline.custom_data.get(INSTRUCTION_KEY),
        )
        found = instructions.find(texts)
        part.texts = texts
        part.instruction = found.text if found else None
        part.instruction_source = found.source if found else None
        out.append((part, c))
    return out
