"""Keep large freed blocks from staying resident.

glibc raises its mmap threshold (up to 32 MB) each time a large mmapped block is freed; later blocks below it come
from the heap, and a heap fragmented by long- and short-lived blocks keeps freed memory resident. Training with
frozen weights held in bf16 hits exactly that: the fp32 copies of the load are freed, then every step casts
weights to fp32 for a moment. Full-size Kosmos-2's LoRA step measured 13.2 GiB peak resident with glibc's dynamic
threshold against 6.9-7.2 GiB with a fixed one (``bench/results/fullsize.md``). ``keep_large_blocks_unmapped`` fixes the
threshold (blocks above it are mapped and unmapped by themselves) and trims what is already freed. ``robovlm
export`` calls it too: the TorchScript exporter frees gigabytes per graph.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3
"""glibc's ``mallopt`` parameter number (malloc.h)."""


def keep_large_blocks_unmapped(threshold: int = 128 * 1024) -> bool:
    """Fix glibc's mmap threshold at ``threshold`` bytes and give freed heap memory back (``malloc_trim``); returns
    False where the C library has neither (musl, macOS: their allocators do not grow a threshold)."""
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    if libc is None or not hasattr(libc, "mallopt") or not hasattr(libc, "malloc_trim"):
        log.debug("no glibc mallopt/malloc_trim in %s", name)
        return False
    ok = bool(libc.mallopt(M_MMAP_THRESHOLD, threshold))
    libc.malloc_trim(0)
    return ok
