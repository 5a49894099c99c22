"""Freed heap memory goes back to the system: the fp32 copies freed when frozen weights are held in bf16 must not
stay resident (``robovlm.utils.memory``)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

CHILD = r"""
import torch
from robovlm.utils.memory import release_freed_memory

def rss():
    return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmRSS:"))

big = torch.ones(6 << 20)  # 24 MB, mmapped; freeing it raises glibc's mmap threshold above 16 MB
del big
blocks = [torch.ones(4 << 20) for _ in range(48)]  # 48 x 16 MB, now from the heap
pin = torch.ones(4 << 20)  # keeps the top of the heap in use, so free() cannot shrink it by itself
del blocks
before = rss()
assert release_freed_memory()
print(before - rss())
"""


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's malloc_trim")
def test_memory_freed_on_the_heap_is_given_back():
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, check=True)
    released = int(out.stdout.strip())
    assert released > 400 * 2**20, f"only {released / 2**20:.0f} MB of the 768 MB freed went back"
