"""Weight quantization of exported graphs with ONNX Runtime's own tools (``robovlm export --quantize``; issue 19).

- ``int8``: dynamic quantization of every MatMul with a constant weight (``quantize_dynamic``: int8 weights with a
  per-tensor scale, activations quantized per call); ONNX Runtime's CPU provider fuses it into
  ``DynamicQuantizeMatMul``.
- ``int4``: weight-only 4-bit ``MatMulNBits`` (blocks of 32 along the input dimension, symmetric, fp32 scales), the
  format ONNX Runtime's CPU and CUDA kernels for language models take.

Both quantize the exported fp32 graph, one graph at a time; the quantized weights then go to the shared weights
file like any others (a language-model weight that ``instruction`` and ``frame`` both hold quantizes to the same
bytes, so it is still stored once). The parity report measures what the quantization costs against torch fp32.

Memory: ONNX Runtime's dynamic quantizer holds three copies of the graph it is given (the graph, a deep copy it
makes for shape inference and that copy reloaded from disk: 3.0x the graph's fp32 weights, measured), which for
PaliGemma-3B's language model is 28 GiB. So ``int8`` hands it the graph in passes: each pass sees the whole graph with
the weights of a few MatMuls inside (``INT8_PASS_BYTES``) and every other tensor as a graph input, which the quantizer
leaves alone (it quantizes only MatMuls whose weight is constant); the quantized weights it returns are kept and the
next pass takes the quantized graph. MatMuls sharing an input (the q/k/v projections) are in the same pass, so they
share one ``DynamicQuantizeLinear`` as in a single pass, and the result is the graph one pass would give. Peak: a
quarter of the graph's fp32 weights (the int8 weights kept) plus three copies of one pass. The MatMulNBits quantizer
holds 1.6 copies of the graph; ``check_memory`` refuses a graph that would not fit before its first pass instead of
leaving it to the kernel's OOM killer.
"""

from __future__ import annotations

import logging
import math
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from tqdm import tqdm

if TYPE_CHECKING:
    import onnx

M = TypeVar("M", "onnx.ModelProto", "onnx.TensorProto")

GIB = 1024**3

log = logging.getLogger(__name__)

QUANTIZE_MODES = ("int8", "int4")
INT4_BLOCK = 32  # weights per scale along K: ONNX Runtime's default for MatMulNBits
INT8_PASS_BYTES = 512 * 1024**2  # fp32 MatMul weights in one pass of ONNX Runtime's int8 quantizer
# peak of each quantizer: copies of the graph's fp32 weights, plus (int8) three copies of one pass
QUANTIZER_COPIES = {"int8": 0.25, "int4": 1.6}
PASS_COPIES = {"int8": 3 * INT8_PASS_BYTES, "int4": 0}


class QuantizeMemoryError(MemoryError):
    """The machine has too little memory for ONNX Runtime's quantizer on this graph; the message says how much."""


def available_bytes() -> int:
    """``MemAvailable`` of ``/proc/meminfo``: what the kernel can give without swapping."""
    with open("/proc/meminfo") as meminfo:
        return next(int(line.split()[1]) * 1024 for line in meminfo if line.startswith("MemAvailable:"))


def check_memory(graph_bytes: int, mode: str, what: str, *, available: int | None = None) -> None:
    """Refuse to quantize a graph of ``graph_bytes`` fp32 weights when its quantizer would not fit in memory."""
    need = QUANTIZER_COPIES[mode] * graph_bytes + PASS_COPIES[mode]
    available = available_bytes() if available is None else available
    if need > available:
        hint = " (--quantize int8 needs less)" if mode == "int4" else ""
        raise QuantizeMemoryError(
            f"quantizing {what} to {mode} needs about {need / GIB:.1f} GiB ({QUANTIZER_COPIES[mode]:g} copies of "
            f"its {graph_bytes / GIB:.1f} GiB of fp32 weights{_pass_text(mode)}); {available / GIB:.1f} GiB is "
            f"available{hint}"
        )


def _pass_text(mode: str) -> str:
    return f" and 3 copies of one {INT8_PASS_BYTES / GIB:.1f} GiB pass" if PASS_COPIES[mode] else ""


def quantize_graph(source: Path, target: Path, mode: str) -> None:
    """Write the quantized graph of ``source`` to ``target`` (its weights in ``<target>.data`` beside it)."""
    import onnx

    if mode == "int8":
        quantize_int8(source, target)
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


def quantize_int8(source: Path, target: Path, *, pass_bytes: int | None = None) -> None:
    """Dynamic int8 quantization of every MatMul with a constant weight, by ``quantize_dynamic`` in passes of about
    ``pass_bytes`` (default ``INT8_PASS_BYTES``) of fp32 weights (module docstring). ``target`` is written beside
    ``source``: the tensors the quantizer does not touch keep pointing at the files the exporter wrote them to."""
    import onnx

    if target.parent.resolve() != source.parent.resolve():
        raise ValueError(f"the int8 graph is written beside its source: {target} is not in {source.parent}")
    from .weight_store import inline_attribute_tensors

    proto = onnx.load(str(source), load_external_data=False)
    inline_attribute_tensors(proto.graph, source.parent)  # a pass's graph is saved elsewhere
    held = {t.name: t for t in proto.graph.initializer}  # every tensor, its data where it is (inline or external)
    inputs = {i.name for i in proto.graph.input if i.name not in held}  # the graph's own inputs
    del proto.graph.initializer[:]
    _keep_inputs(proto.graph, inputs)  # an older graph lists its initializers as inputs too
    passes = _passes(proto.graph, held, INT8_PASS_BYTES if pass_bytes is None else pass_bytes)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".int8.") as tmp:
        for names in tqdm(passes, desc=f"int8 {source.stem}", unit="pass", disable=len(passes) < 2):
            proto = _run_pass(proto, held, set(names), inputs, source.parent, Path(tmp))
    proto.graph.initializer.extend(held.values())
    onnx.save_model(
        proto,
        str(target),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=f"{target.name}.data",
        size_threshold=1024,
    )


def _run_pass(
    proto: onnx.ModelProto, held: dict[str, onnx.TensorProto], names: set[str], inputs: set[str], base: Path, tmp: Path
) -> onnx.ModelProto:
    """One pass: the graph with the tensors ``names`` inside and every other tensor of ``held`` as an input, through
    ``quantize_dynamic``; ``held`` gets the pass's output tensors in place of its inputs. ``proto``, and the quantized
    graph returned, hold no initializers and only the graph's own inputs."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from .weight_store import clear_data, tensor_bytes

    # protobuf frees a message's data only with the message that holds it (clearing a field keeps it): every
    # message that holds weights is made here and dropped, never cleared and kept
    model = _copy(proto)
    graph = model.graph
    for name, tensor in held.items():
        if name in names:
            loaded = _copy(tensor)
            clear_data(loaded)
            loaded.raw_data = tensor_bytes(tensor, base)
            graph.initializer.append(loaded)
        else:
            graph.input.append(onnx.helper.make_tensor_value_info(name, tensor.data_type, list(tensor.dims)))
    source, out = tmp / "pass.onnx", tmp / "pass.int8.onnx"
    onnx.save_model(model, str(source), save_as_external_data=True, location="pass.onnx.data")
    del model, graph
    quantize_dynamic(
        str(source),
        str(out),
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["MatMul"],
        use_external_data_format=True,
    )
    result = onnx.load(str(out))  # this pass's int8 weights, scales and zero points, inline
    for name in names:
        del held[name]
    for tensor in result.graph.initializer:
        held[tensor.name] = _copy(tensor)
    del result.graph.initializer[:]
    _keep_inputs(result.graph, inputs)  # the pass's placeholders go
    for path in tmp.iterdir():
        path.unlink()
    return _copy(result)


def _keep_inputs(graph: onnx.GraphProto, inputs: set[str]) -> None:
    keep = [i for i in graph.input if i.name in inputs]
    del graph.input[:]
    graph.input.extend(keep)


def _copy(message: M) -> M:
    """A copy of ``message`` in memory of its own."""
    copy = type(message)()
    copy.CopyFrom(message)
    return copy


def _passes(graph: onnx.GraphProto, held: dict[str, onnx.TensorProto], pass_bytes: int) -> list[list[str]]:
    """The MatMul weights in passes of about ``pass_bytes``; MatMuls that share an input or a weight stay together."""
    parent: dict[tuple[str, str], tuple[str, str]] = {}

    def root(key: tuple[str, str]) -> tuple[str, str]:
        while parent.setdefault(key, key) != key:
            key = parent[key]
        return key

    for node in graph.node:
        if node.op_type == "MatMul" and len(node.input) == 2 and node.input[1] in held:
            parent[root(("w", node.input[1]))] = root(("a", node.input[0]))
    groups: dict[tuple[str, str], list[str]] = {}
    for key in parent:
        if key[0] == "w":
            groups.setdefault(root(key), []).append(key[1])
    passes: list[list[str]] = []
    size = pass_bytes
    for weights in groups.values():
        nbytes = sum(_nbytes(held[w]) for w in weights)
        if size + nbytes > pass_bytes:
            passes.append([])
            size = 0
        passes[-1].extend(weights)
        size += nbytes
    return passes


def _nbytes(tensor: onnx.TensorProto) -> int:
    import onnx

    return math.prod(tensor.dims) * onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
