"""Weight quantization of exported graphs with ONNX Runtime's own tools (``robovlm export --quantize``; issue 19).

- ``int8``: dynamic quantization of every MatMul with a constant weight (``quantize_dynamic``: int8 weights with a
  per-tensor scale, activations quantized per call); ONNX Runtime's CPU provider fuses it into
  ``DynamicQuantizeMatMul``.
- ``int4``: weight-only 4-bit ``MatMulNBits`` (blocks of 32 along the input dimension, symmetric, fp32 scales), the
  format ONNX Runtime's CPU and CUDA kernels for language models take.

Both quantize the exported fp32 graph, one graph at a time; the quantized weights then go to the shared weights
file like any others (a language-model weight that ``instruction`` and ``frame`` both hold quantizes to the same
bytes, so it is still stored once). The parity report measures what the quantization costs against torch fp32.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)

QUANTIZE_MODES = ("int8", "int4")
INT4_BLOCK = 32  # weights per scale along K: ONNX Runtime's default for MatMulNBits


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
