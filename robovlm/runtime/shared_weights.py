"""Sessions that share one copy of an export's weights (issue 19; written by ``robovlm.export.weight_store``).

``weights.onnx.data`` holds every large initializer of the four graphs once. It is memory-mapped once and each
graph's external initializers become ``OrtValue`` views of that mapping, handed to its session with
``SessionOptions.add_initializer``: the ``instruction`` and ``frame`` sessions read the same pages of the language
model instead of each mapping or copying its own.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

WEIGHTS_FILE = "weights.onnx.data"
ALIGN = 4096  # page size: ONNX Runtime maps an external tensor in place only at a page-aligned offset


def shared_initializers(graph_file: Path, weights: np.memmap | None) -> dict[str, ort.OrtValue]:
    """The graph's initializers that live in ``weights.onnx.data``, as CPU ``OrtValue`` views of ``weights`` (the
    file mapped once for all sessions); empty for an export without the shared file."""
    import onnx
    from onnx.helper import tensor_dtype_to_np_dtype

    if weights is None:
        return {}
    proto = onnx.load(str(graph_file), load_external_data=False)
    values = {}
    for tensor in proto.graph.initializer:
        info = {e.key: e.value for e in tensor.external_data}
        if tensor.data_location != onnx.TensorProto.EXTERNAL or info.get("location") != WEIGHTS_FILE:
            continue
        offset, length = int(info["offset"]), int(info["length"])
        dtype = np.dtype(tensor_dtype_to_np_dtype(tensor.data_type))
        view = weights[offset : offset + length].view(dtype).reshape(tuple(tensor.dims))
        values[tensor.name] = ort.OrtValue.ortvalue_from_numpy(view)
    return values


def map_weights(onnx_dir: Path) -> np.memmap | None:
    """``weights.onnx.data`` mapped read-only, or None for an export that keeps a data file per graph."""
    path = onnx_dir / WEIGHTS_FILE
    return np.memmap(path, dtype=np.uint8, mode="r") if path.is_file() else None
