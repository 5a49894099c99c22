"""Weight quantization of exported graphs with ONNX Runtime's own tools (``robovlm export --quantize``; issue 19).

- ``int8``: dynamic quantization of every MatMul with a constant weight (``quantize_dynamic``: int8 weights with a
  per-tensor scale, activations quantized per call); ONNX Runtime's CPU provider fuses it into
  ``DynamicQuantizeMatMul``.
- ``int4``: weight-only 4-bit ``MatMulNBits`` (blocks of 32 along the input dimension, symmetric, fp32 scales), the
  format ONNX Runtime's CPU and CUDA kernels for language models take.

Both quantize the exported fp32 graph, one graph at a time; the quantized weights then go to the shared weights
file like any others (a language-model weight that ``instruction`` and ``frame`` both hold quantizes to the same
bytes, so it is still stored once). The parity report measures what the quantization costs against torch fp32.

Memory: ONNX Runtime's dynamic quantizer holds three copies of the graph it quantizes (the graph, a deep copy it
makes for shape inference and that copy reloaded from disk; measured on Kosmos-2 with 4 of its 24 layers: 3.0x the
graph's fp32 weights), the MatMulNBits quantizer 1.6. The language model is in two graphs, so quantizing PaliGemma-3B
to int8 needs about 30 GiB; ``check_memory`` refuses such an export before its first graph instead of leaving it
to the kernel's OOM killer.
"""

from __future__ import annotations

import logging
from pathlib import Path

GIB = 1024**3

log = logging.getLogger(__name__)

QUANTIZE_MODES = ("int8", "int4")
INT4_BLOCK = 32  # weights per scale along K: ONNX Runtime's default for MatMulNBits
QUANTIZER_COPIES = {"int8": 3.0, "int4": 1.6}  # peak of each quantizer, in copies of the graph's fp32 weights


class QuantizeMemoryError(MemoryError):
    """The machine has too little memory for ONNX Runtime's quantizer on this graph; the message says how much."""


def available_bytes() -> int:
    """``MemAvailable`` of ``/proc/meminfo``: what the kernel can give without swapping."""
    with open("/proc/meminfo") as meminfo:
        return next(int(line.split()[1]) * 1024 for line in meminfo if line.startswith("MemAvailable:"))


def check_memory(graph_bytes: int, mode: str, what: str, *, available: int | None = None) -> None:
    """Refuse to quantize a graph of ``graph_bytes`` fp32 weights when its quantizer would not fit in memory."""
    need = QUANTIZER_COPIES[mode] * graph_bytes
    available = available_bytes() if available is None else available
    if need > available:
        hint = " (--quantize int4 needs about half as much)" if mode == "int8" else ""
        raise QuantizeMemoryError(
            f"quantizing {what} to {mode} needs about {need / GIB:.1f} GiB: ONNX Runtime's quantizer holds "
            f"{QUANTIZER_COPIES[mode]:g} copies of its {graph_bytes / GIB:.1f} GiB of fp32 weights; "
            f"{available / GIB:.1f} GiB is available{hint}"
        )


def quantize_graph(source: Path, target: Path, mode: str) -> None:
    """Write the quantized graph of ``source`` to ``target`` (its weights in ``<target>.data`` beside it)."""
    import onnx

    if mode == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(
            str(source),
            str(target),
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul"],
            use_external_data_format=True,
        )
    elif mode == "int4":
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        quantizer = MatMulNBitsQuantizer(onnx.load(str(source)), block_size=INT4_BLOCK, is_symmetric=True)
        quantizer.process()
        quantizer.model.save_model_to_file(str(target), use_external_data_format=True)
    else:
        raise ValueError(f"quantize must be one of {list(QUANTIZE_MODES)}, got {mode!r}")
    kinds = {"int8": ("MatMulInteger", "DynamicQuantizeMatMul"), "int4": ("MatMulNBits",)}[mode]
    count = sum(n.op_type in kinds for n in onnx.load(str(target), load_external_data=False).graph.node)
    log.info("%s: %d MatMuls quantized to %s", target.name, count, mode)
