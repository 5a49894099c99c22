"""The suite's own machinery (docs/development.md): pytest-xdist keeps an ``xdist_group`` on one worker (pytest 9.2
silently broke that, pytest-dev/pytest-xdist#1386, hence the pin in the dev extra), and the workers of one run never
share a DDS domain."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from tests.conftest import _domain_id

GROUPED = """
import os

import pytest

pytestmark = pytest.mark.xdist_group("one_at_a_time")


@pytest.mark.parametrize("i", range(4))
def test_where(i):
    with open(os.environ["WHERE"], "a") as f:
        f.write(os.environ["PYTEST_XDIST_WORKER"] + "\\n")


@pytest.mark.parametrize("i", range(4))
@pytest.mark.xdist_group("other")
def test_elsewhere(i):
    pass
"""


def test_loadgroup_keeps_a_group_on_one_worker(tmp_path):
    (tmp_path / "test_grouped.py").write_text(textwrap.dedent(GROUPED))
    where = tmp_path / "where.txt"
    env = {**os.environ, "WHERE": str(where)}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2", "--dist", "loadgroup", "."]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    workers = where.read_text().split()
    assert len(workers) == 4 and len(set(workers)) == 1, f"one group ran on several workers: {workers}"


def test_the_workers_of_a_run_have_domains_of_their_own(monkeypatch):
    for count in (1, 2, 3, 4, 8):
        monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", str(count))
        ids = []
        for k in range(count):
            monkeypatch.setenv("PYTEST_XDIST_WORKER", f"gw{k}")
            ids.append(_domain_id())
        assert len(set(ids)) == count and all(1 <= i <= 100 for i in ids), (count, ids)
    monkeypatch.delenv("PYTEST_XDIST_WORKER")
    assert 1 <= _domain_id() <= 100
