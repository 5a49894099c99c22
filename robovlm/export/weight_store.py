"""One file of weights for all the graphs of an export, each tensor once (issue 19).

The ``instruction`` and ``frame`` graphs both run the language model, so each carries its weights; with a file per
graph, ONNX Runtime loads the language model twice (for Kosmos-2 at full size, 2 x 5.3 GB in fp32). The exporter
also names the same tensor differently in two graphs (``onnx::MatMul_953`` in one, ``onnx::MatMul_1210`` in the
other: constant folding names the transposed weights it makes), so the tensors are matched by content.

Writing (``WeightStore``): every initializer of ``min_bytes`` or more goes to ``weights.onnx.data`` once, at an
offset aligned to 4096 bytes (ONNX Runtime memory-maps page-aligned external data on the CPU instead of reading it),
and the graph points at it. Tensors are streamed one at a time from wherever the exporter put them (inside the
graph under 2 GB, one file per tensor over it), so a multi-GB graph is never held in memory whole.

Reading it is the engine's side: ``robovlm.runtime.shared_weights``.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from ..runtime.shared_weights import ALIGN, WEIGHTS_FILE

if TYPE_CHECKING:
    import onnx

log = logging.getLogger(__name__)


class WeightStore:
    """Appends tensors to ``<dir>/weights.onnx.data`` (each distinct content once) and points graphs at them."""

    def __init__(self, directory: Path, *, min_bytes: int) -> None:
        self.path = directory / WEIGHTS_FILE
        self.min_bytes = min_bytes
        self._file = open(self.path, "wb")  # noqa: SIM115  (closed by close(); the store outlives one call)
        self._where: dict[bytes, tuple[int, int]] = {}  # content digest -> (offset, length)
        self.written = 0  # bytes of tensor data in the file (padding excluded)
        self.referenced = 0  # bytes of tensor data the graphs point at (shared tensors counted per graph)

    def close(self) -> None:
        """Close the file; a store nothing was written to leaves no file (an empty file cannot be mapped)."""
        self._file.close()
        if not self.written:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> WeightStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _put(self, data: bytes) -> tuple[int, int]:
        digest = hashlib.sha256(data).digest()
        self.referenced += len(data)
        if digest in self._where:
            return self._where[digest]
        offset = -self._file.tell() % ALIGN + self._file.tell()
        self._file.seek(offset)
        self._file.write(data)
        self._where[digest] = (offset, len(data))
        self.written += len(data)
        return offset, len(data)

    def add_graph(self, source: Path, target: Path) -> None:
        """Re-save the graph at ``source`` (as the exporter wrote it, its external files beside it) as ``target``,
        with its initializers of ``min_bytes`` or more in the store; ``target`` is written in the store's directory."""
        import onnx

        proto = onnx.load(str(source), load_external_data=False)
        for tensor in proto.graph.initializer:
            data = tensor_bytes(tensor, source.parent)
            if len(data) < self.min_bytes:
                if tensor.data_location == onnx.TensorProto.EXTERNAL:  # a small tensor the exporter put outside
                    clear_data(tensor)
                    tensor.raw_data = data
                continue
            offset, length = self._put(data)
            clear_data(tensor)
            tensor.data_location = onnx.TensorProto.EXTERNAL
            for key, value in (("location", WEIGHTS_FILE), ("offset", offset), ("length", length)):
                tensor.external_data.add(key=key, value=str(value))
        inline_attribute_tensors(proto.graph, source.parent)
        self._file.flush()
        onnx.save_model(proto, str(target))


def tensor_bytes(tensor: onnx.TensorProto, base: Path) -> bytes:
    """The tensor's data as raw little-endian bytes, from the graph or from its external file under ``base``."""
    import onnx
    from onnx import numpy_helper

    if tensor.data_location != onnx.TensorProto.EXTERNAL:
        return tensor.raw_data if tensor.HasField("raw_data") else numpy_helper.to_array(tensor).tobytes()
    info = {e.key: e.value for e in tensor.external_data}
    offset, length = int(info.get("offset", 0)), info.get("length")
    with open(base / info["location"], "rb") as f:
        f.seek(offset)
        return f.read(int(length)) if length is not None else f.read()


def inline_attribute_tensors(graph: onnx.GraphProto, base: Path) -> None:
    """Bring ``Constant`` values a tool put outside the graph (the exporter does over 2 GB) back inside it, so the
    graph can be saved anywhere."""
    import onnx

    for tensor in _attribute_tensors(graph):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            data = tensor_bytes(tensor, base)
            clear_data(tensor)
            tensor.raw_data = data


def _attribute_tensors(graph: onnx.GraphProto) -> list[onnx.TensorProto]:
    """Tensors held by node attributes (``Constant`` values), in subgraphs too."""
    import onnx

    found = []
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                found.append(attr.t)
            found.extend(attr.tensors)
            for sub in [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs):
                found.extend(sub.initializer)  # a subgraph's initializers stay inside it
                found.extend(_attribute_tensors(sub))
    return found


def clear_data(tensor: onnx.TensorProto) -> None:
    import onnx

    for field in ("raw_data", "float_data", "int32_data", "int64_data", "double_data", "uint64_data", "string_data"):
        tensor.ClearField(field)
    del tensor.external_data[:]
    tensor.data_location = onnx.TensorProto.DEFAULT
