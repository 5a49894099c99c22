"""Large freed blocks go back to the system: the fp32 copies freed when frozen weights are held in bf16, and each
step's casts, must not stay resident (``robovlm.utils.memory``)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

CHILD = r"""
import sys
import torch
from robovlm.utils.memory import keep_large_blocks_unmapped

def rss():
    return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmRSS:"))

if sys.argv[1] == "fixed":
    assert keep_large_blocks_unmapped()
big = torch.ones(6 << 20)  # 24 MB, mmapped; freeing it raises glibc's dynamic mmap threshold above 16 MB
del big
blocks = [torch.ones(4 << 20) for _ in range(48)]  # 48 x 16 MB
pin = torch.ones(4 << 20)  # keeps the top of the heap in use, so free() cannot shrink it by itself
before = rss()
del blocks
print(before - rss())
"""


def _released(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's allocator")
def test_large_freed_blocks_leave_the_resident_set():
    assert _released("dynamic") < 100 * 2**20, "glibc's dynamic threshold no longer keeps freed blocks (update me)"
    released = _released("fixed")
    assert released > 700 * 2**20, f"only {released / 2**20:.0f} MB of the 768 MB freed left the resident set"
