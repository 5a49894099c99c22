"""Small tables users keep beside their recordings (instructions per episode, episode times): CSV with a header
row, or YAML. The reading and the CSV checks shared by ``robovlm.data.instructions`` and ``robovlm.data.recording``;
each keeps its own YAML shape."""

from __future__ import annotations

import csv
from pathlib import Path

from .errors import EpisodeError


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise EpisodeError(f"{path}: cannot read ({exc.strerror or exc})") from exc


def is_csv(path: Path) -> bool:
    return path.suffix.lower() == ".csv"


def csv_rows(path: Path, text: str, columns: tuple[str, ...]) -> list[dict[str, str]]:
    """The rows of a CSV whose header names at least ``columns`` (cells stripped); a missing column or an empty
    cell in one of them is an error naming the file (and line)."""
    reader = csv.DictReader(text.splitlines())
    fields = [f.strip() for f in reader.fieldnames or []]
    if not set(columns) <= set(fields):
        names = " and ".join(f"'{c}'" for c in columns)
        raise EpisodeError(f"{path}: a CSV needs the columns {names} (has {fields})")
    rows = []
    for line, raw in enumerate(reader, start=2):
        row = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
        empty = [c for c in columns if not row[c]]
        if empty:
            raise EpisodeError(f"{path}:{line}: empty {' and '.join(repr(c) for c in empty)}")
        rows.append(row)
    return rows
