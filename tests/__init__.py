"""The test suite, in folders that mirror the packages; shared helpers (fixtures, the ROS harness, a foreign bag)
sit here."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
"""The repository root."""
