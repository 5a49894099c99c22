"""Where an episode's instruction comes from: one order of precedence for ``train``, ``replay``, ``inspect-bag`` and
``convert-bags``.

Robot teams note their instructions in many places; the first source that has one wins:

1. the recording's instruction topic (``std_msgs/String``; in a long recording, the latest message at or before
   the episode's last frame);
2. ``--instructions FILE``: YAML (``NAME: text``) or CSV (columns ``episode`` and ``instruction``), where NAME is
   an episode name (``BAG#k`` for an episode cut from a long bag), a bag or file name, or a glob of either
   (``day1#*``); an exact name wins over a glob, among globs the first in the file;
3. ``--instruction TEXT`` for every episode;
4. rosbag2 ``custom_data`` in ``metadata.yaml`` (key ``instruction``);
5. the HDF5 file's ``instruction`` attribute;
6. ``models/instructions.json`` by scenario id in the episode's name (the user's recorder writes no text).

A missing instruction is an error that names every source tried and why each had none.
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..utils.resources import find_resource
from .errors import EpisodeError
from .table_file import csv_rows, is_csv, read_text

DEFAULT_INSTRUCTIONS = ("models", "instructions.json")  # looked up with robovlm.utils.resources
INSTRUCTION_KEY = "instruction"
"""The key in rosbag2 ``custom_data`` and the HDF5 attribute that hold an episode's instruction."""


def load_instructions(path: str | Path | None = None) -> dict[str, str]:
    path = Path(path) if path else find_resource(*DEFAULT_INSTRUCTIONS)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise EpisodeError(f"{path}: cannot read the instruction mapping ({exc})") from exc
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and v.strip() for k, v in data.items()
    ):
        raise EpisodeError(f"{path}: must map scenario ids to non-empty sentences")
    return data


@dataclass(frozen=True)
class Found:
    """An instruction and the source it came from, as ``inspect-bag`` prints it."""

    text: str
    source: str


@dataclass(frozen=True)
class EpisodeTexts:
    """What one episode's own files say: everything the sources above look at except the user's flags."""

    episode: str
    """The episode's name (``BAG#k`` when cut from a long recording)."""
    recording: str | None = None
    """The bag or HDF5 file name it came from (matched by ``--instructions`` too)."""
    scenario: str | None = None
    topic: str | None = None
    """The text on the recording's instruction topic, if any."""
    topic_name: str | None = None
    custom_data: str | None = None
    """rosbag2 ``custom_data['instruction']``."""
    attribute: str | None = None
    """The HDF5 file's ``instruction`` attribute."""


def read_table(path: Path, value_column: str) -> list[tuple[str, str]]:
    """``(name, value)`` rows of a YAML mapping or a CSV file with columns ``episode`` and ``value_column``."""
    text = read_text(path)
    if is_csv(path):
        return [(row["episode"], row[value_column]) for row in csv_rows(path, text, ("episode", value_column))]
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise EpisodeError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict) or not all(isinstance(v, str) and v.strip() for v in data.values()):
        raise EpisodeError(f"{path}: YAML must map episode names (or globs) to non-empty {value_column} text")
    return [(str(k), v.strip()) for k, v in data.items()]


@dataclass
class InstructionSources:
    """The user's instruction flags and the scenario mapping; ``resolve`` applies the order of precedence."""

    file: Path | None = None
    """``--instructions FILE``."""
    text: str | None = None
    """``--instruction TEXT``."""
    mapping: dict[str, str] | None = None
    """Scenario id -> sentence (default: ``models/instructions.json``)."""
    mapping_name: str = "models/instructions.json"
    _rows: list[tuple[str, str]] = field(default_factory=list, repr=False)

    @classmethod
    def of(cls, value: InstructionSources | dict[str, str] | None) -> InstructionSources:
        """``value`` itself, or a bare scenario mapping as sources (None: no mapping, so no instruction unless the
        episode's own files carry one)."""
        if isinstance(value, InstructionSources):
            return value
        return cls(mapping=dict(value or {}))

    def __post_init__(self) -> None:
        if self.text is not None and not self.text.strip():
            raise EpisodeError("--instruction is empty")
        if self.file is not None:
            self.file = Path(self.file)
            self._rows = read_table(self.file, INSTRUCTION_KEY)
        if self.mapping is None:
            self.mapping = load_instructions()

    def from_file(self, *names: str | None) -> tuple[str, str] | None:
        """``(text, matched key)`` of the first name with a row in the instructions file: exact keys first."""
        candidates = [n for n in names if n]
        for name in candidates:
            for key, text in self._rows:
                if key == name:
                    return text, key
        for name in candidates:
            for key, text in self._rows:
                if fnmatch.fnmatchcase(name, key):
                    return text, key
        return None

    def find(self, ep: EpisodeTexts) -> Found | None:
        """The instruction of ``ep`` from the first source that has one, or None."""
        if ep.topic:
            return Found(ep.topic, f"topic {ep.topic_name or 'instruction'}")
        hit = self.from_file(ep.episode, ep.recording)
        if hit:
            return Found(hit[0], f"file {self.file} ({hit[1]})")
        if self.text:
            return Found(self.text, "--instruction")
        if ep.custom_data:
            return Found(ep.custom_data, "metadata.yaml custom_data")
        if ep.attribute:
            return Found(ep.attribute, "HDF5 attribute")
        if ep.scenario and self.mapping and ep.scenario in self.mapping:
            return Found(self.mapping[ep.scenario], f"{self.mapping_name} ({ep.scenario})")
        return None

    def resolve(self, ep: EpisodeTexts) -> Found:
        """``find``, or an ``EpisodeError`` naming every source tried and why each had none."""
        found = self.find(ep)
        if found is not None:
            return found
        tried = [
            f"the instruction topic {ep.topic_name or '(none in this recording)'}: no message",
            (
                f"--instructions {self.file}: no row matches {ep.episode!r}"
                + (f" or {ep.recording!r}" if ep.recording and ep.recording != ep.episode else "")
                if self.file
                else "--instructions FILE: not given"
            ),
            "--instruction TEXT: not given",
            "metadata.yaml custom_data: no 'instruction' key",
            "HDF5 attribute 'instruction': none",
            f"{self.mapping_name}: "
            + (f"no entry for scenario {ep.scenario!r}" if ep.scenario else "no scenario id in the name"),
        ]
        raise EpisodeError(f"no instruction for episode {ep.episode!r}; tried, in order: " + "; ".join(tried))
