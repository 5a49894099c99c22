"""Weights from a safetensors file into a model built on the meta device: one copy in memory, in the engine's dtype.

``load_file`` followed by ``load_state_dict`` holds the weights twice (the model's own random initialization beside
the loaded dict: 2.1x the weights for the full-size Kosmos-2), and a memory-mapped file counts its touched pages in
the process's resident memory for as long as it is mapped. Here the model's parameters are never allocated (built
under ``init_empty_weights``), and each tensor is read with ``readinto`` straight into its own buffer, cast to the
target dtype a piece at a time, then assigned: the peak is the weights at the target dtype plus one piece
(``CAST_PIECE_BYTES``). A whole tensor of scratch would not do: PaliGemma's embedding alone is 2.1 GB in fp32,
a third of its bf16 weights.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

# safetensors dtype names (the format's spec) -> torch
SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
MAX_HEADER_BYTES = 100 * 1024 * 1024  # the format's own limit
CAST_PIECE_BYTES = 16 * 1024 * 1024  # read at the file's dtype, then cast, this much at a time


class WeightFileError(ValueError):
    """The safetensors file is truncated or its header is malformed; the message names the file."""


def read_header(path: Path) -> tuple[dict[str, dict], int]:
    """The tensor table of a safetensors file (``__metadata__`` dropped) and the offset its data starts at."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise WeightFileError(f"{path}: {size} bytes, too short for a safetensors header")
        (n,) = struct.unpack("<Q", raw)
        if n > MAX_HEADER_BYTES or 8 + n > size:
            raise WeightFileError(f"{path}: header length {n} does not fit the file ({size} bytes)")
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise WeightFileError(f"{path}: the header is not valid JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise WeightFileError(f"{path}: the header is not a JSON object")
    header.pop("__metadata__", None)
    data_size = size - 8 - n
    for name, info in header.items():
        try:
            dtype = SAFETENSORS_DTYPES[info["dtype"]]
            start, end = (int(v) for v in info["data_offsets"])
            numel = 1
            for d in info["shape"]:
                numel *= int(d)
        except (KeyError, TypeError, ValueError) as exc:
            raise WeightFileError(f"{path}: tensor {name!r} has a malformed header entry {info!r}") from exc
        if not 0 <= start <= end <= data_size or end - start != numel * dtype.itemsize:
            raise WeightFileError(
                f"{path}: tensor {name!r} ({info['dtype']}, shape {info['shape']}) does not fit bytes "
                f"{start}..{end} of {data_size} (truncated or corrupt file)"
            )
    return header, 8 + n


def file_float_dtype(path: Path) -> torch.dtype | None:
    """The one dtype a file's floating tensors load in: theirs if they agree, else the widest (a LoRA checkpoint
    trained with bf16 frozen weights holds bf16 and fp32 tensors and loads as fp32). None: no floating tensor."""
    found: torch.dtype | None = None
    for info in read_header(path)[0].values():
        dt = SAFETENSORS_DTYPES[info["dtype"]]
        if dt.is_floating_point:
            found = dt if found is None else torch.promote_types(found, dt)
    return found


def read_tensors(
    path: str | Path, *, dtype: torch.dtype | None = None, keep: Callable[[str], bool] = lambda name: True
) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield ``(name, tensor)`` in file order, each read into its own buffer; floating tensors cast to ``dtype``."""
    path = Path(path)
    header, base = read_header(path)
    entries = sorted(((n, i) for n, i in header.items() if keep(n)), key=lambda kv: kv[1]["data_offsets"][0])
    scratch: torch.Tensor | None = None  # one buffer for the pieces of every tensor that is cast
    with open(path, "rb", buffering=0) as f:
        for name, info in entries:
            start, end = info["data_offsets"]
            file_dtype = SAFETENSORS_DTYPES[info["dtype"]]
            f.seek(base + start)
            if dtype is None or not file_dtype.is_floating_point or file_dtype == dtype:
                buf = torch.empty(end - start, dtype=torch.uint8)
                _read_exactly(f, buf, path, name)
                yield name, buf.view(file_dtype).reshape(info["shape"])
                continue
            # cast: read a piece at a time into the scratch buffer, cast it into the tensor's own buffer
            out = torch.empty((end - start) // file_dtype.itemsize, dtype=dtype)
            step = CAST_PIECE_BYTES // file_dtype.itemsize
            if scratch is None:
                scratch = torch.empty(CAST_PIECE_BYTES, dtype=torch.uint8)
            for lo in range(0, out.numel(), step):
                piece = scratch[: min(step, out.numel() - lo) * file_dtype.itemsize]
                _read_exactly(f, piece, path, name)
                out[lo : lo + piece.numel() // file_dtype.itemsize] = piece.view(file_dtype)
            yield name, out.reshape(info["shape"])


def _read_exactly(f, buf: torch.Tensor, path: Path, name: str) -> None:
    view, done = buf.numpy().data, 0
    while done < len(view):  # readinto may return short counts
        got = f.readinto(view[done:])
        if not got:
            raise WeightFileError(f"{path}: tensor {name!r} ends early (truncated file)")
        done += got


def meta_tensors(module: torch.nn.Module) -> list[str]:
    """Names of parameters and buffers still on the meta device (never loaded)."""
    named = list(module.named_parameters()) + list(module.named_buffers())
    return [name for name, t in named if t.is_meta]
