"""What ``robovlm export`` leaves in ``onnx/`` (issue 19): the graphs, one ``weights.onnx.data`` holding each
large tensor once, the manifest and the parity report.

Over 2 GB the TorchScript exporter writes every initializer as its own file next to the graph; that layout is
written here on a small graph (the exporter cannot be made to write it under 2 GB) and passed through the
exporter's own ``_save_graph``. Two graphs that hold the same tensor under different names (what constant folding
does to the language model's weights in ``instruction`` and ``frame``) store it once, and ONNX Runtime sessions
reading it through one mapping compute what they computed from their own copies."""

import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from robovlm.export.exporter import EXTERNAL_DATA_BYTES, _save_graph
from robovlm.export.weight_store import WeightStore
from robovlm.runtime.onnx_engine import session_options
from robovlm.runtime.shared_weights import ALIGN, WEIGHTS_FILE, map_weights, shared_initializers

BIG = np.arange(EXTERNAL_DATA_BYTES // 4 + 16, dtype=np.float32)  # one initializer over the threshold


def _graph(big_name: str = "onnx__MatMul_4016", big: np.ndarray = BIG) -> onnx.ModelProto:
    inits = [numpy_helper.from_array(big, big_name), numpy_helper.from_array(np.ones(4, np.float32), "model.bias")]
    nodes = [
        helper.make_node("ReduceSum", [big_name], ["s"], keepdims=0),
        helper.make_node("Add", ["x", "model.bias"], ["y0"]),
        helper.make_node("Add", ["y0", "s"], ["y"]),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
        inits,
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _export_dir(tmp_path, name: str, model: onnx.ModelProto, *, per_tensor_files: bool):
    exported = tmp_path / f".{name}.export" / f"{name}.onnx"
    exported.parent.mkdir()
    if per_tensor_files:  # the exporter's layout over 2 GB: one file per initializer, named after it
        onnx.save_model(
            model, str(exported), save_as_external_data=True, all_tensors_to_one_file=False, size_threshold=0
        )
    else:
        onnx.save_model(model, str(exported))
    return exported


def test_the_exporters_per_tensor_files_never_reach_the_onnx_directory(tmp_path):
    onnx_dir = tmp_path / "onnx"
    onnx_dir.mkdir()
    exported = _export_dir(tmp_path, "frame", _graph(), per_tensor_files=True)
    assert {p.name for p in exported.parent.iterdir()} == {"frame.onnx", "onnx__MatMul_4016", "model.bias"}
    os.chmod(exported.parent / "onnx__MatMul_4016", 0o600)

    with WeightStore(onnx_dir, min_bytes=EXTERNAL_DATA_BYTES) as store:
        _save_graph(exported, onnx_dir / "frame.onnx", store)

    assert not exported.parent.exists()
    assert {p.name for p in tmp_path.iterdir()} == {"onnx"}
    assert sorted(p.name for p in onnx_dir.iterdir()) == ["frame.onnx", WEIGHTS_FILE]
    umask = os.umask(0)
    os.umask(umask)
    for p in onnx_dir.iterdir():
        assert p.stat().st_mode & 0o777 == 0o666 & ~umask, p
    model = onnx.load(str(onnx_dir / "frame.onnx"))
    values = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    assert np.array_equal(values["onnx__MatMul_4016"], BIG) and values["model.bias"].sum() == 4
    onnx.checker.check_model(str(onnx_dir / "frame.onnx"))


def test_a_graph_of_small_tensors_is_saved_whole(tmp_path):
    model = _graph()
    del model.graph.initializer[0]
    model.graph.node[0].CopyFrom(helper.make_node("ReduceSum", ["model.bias"], ["s"], keepdims=0))
    exported = _export_dir(tmp_path, "window", model, per_tensor_files=False)
    with WeightStore(tmp_path, min_bytes=EXTERNAL_DATA_BYTES) as store:
        _save_graph(exported, tmp_path / "window.onnx", store)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["window.onnx"]  # no empty weights file
    assert store.written == 0 and map_weights(tmp_path) is None
    assert all(
        t.data_location == TensorProto.DEFAULT for t in onnx.load(str(tmp_path / "window.onnx")).graph.initializer
    )


def test_a_tensor_two_graphs_hold_under_different_names_is_stored_once_and_read_through_one_mapping(tmp_path):
    other = np.linspace(-1, 1, BIG.size, dtype=np.float32)
    graphs = {  # name: (the big tensor's name, its values)
        "instruction": ("onnx::MatMul_953", BIG),
        "frame": ("onnx__MatMul_1210", BIG),  # the same weights, another name (and the >2 GB layout)
        "vision": ("onnx::MatMul_7", other),
    }
    with WeightStore(tmp_path, min_bytes=EXTERNAL_DATA_BYTES) as store:
        for name, (tensor_name, values) in graphs.items():
            exported = _export_dir(tmp_path, name, _graph(tensor_name, values), per_tensor_files=name == "frame")
            _save_graph(exported, tmp_path / f"{name}.onnx", store)
    assert store.written == BIG.nbytes + other.nbytes and store.referenced == 2 * BIG.nbytes + other.nbytes
    weights = map_weights(tmp_path)
    offsets = set()
    x = np.arange(4, dtype=np.float32)
    for name, (_, values) in graphs.items():
        shared = shared_initializers(tmp_path / f"{name}.onnx", weights)
        (tensor,) = shared.values()  # the bias (16 bytes) stays inside the graph
        offsets.add(tensor.data_ptr() - weights.ctypes.data)
        session = ort.InferenceSession(
            str(tmp_path / f"{name}.onnx"),
            sess_options=session_options(1, shared=shared),
            providers=["CPUExecutionProvider"],
        )
        want = x + 1 + values.sum()
        np.testing.assert_allclose(session.run(None, {"x": x})[0], want, rtol=1e-6, atol=1e-4)
    assert len(offsets) == 2 and all(o % ALIGN == 0 for o in offsets), offsets  # the same bytes for two graphs


SESSIONS_CHILD = r"""
import sys
from pathlib import Path
import numpy as np
import onnxruntime as ort
from robovlm.runtime.onnx_engine import session_options
from robovlm.runtime.shared_weights import map_weights, shared_initializers

def hwm():  # this process's peak resident set (ru_maxrss would include the parent's, inherited through fork)
    return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM:"))

d, share = Path(sys.argv[1]), sys.argv[2] == "1"
x = np.ones((1, 4096), np.float32)
base = hwm()
weights = map_weights(d) if share else None
sessions = []
for name in ("instruction", "frame"):
    shared = shared_initializers(d / f"{name}.onnx", weights)
    s = ort.InferenceSession(str(d / f"{name}.onnx"), sess_options=session_options(1, shared=shared),
                             providers=["CPUExecutionProvider"])
    s.run(None, {"x": x})  # every weight read once
    sessions.append(s)
print(hwm() - base)
"""


@pytest.mark.slow
def test_two_sessions_on_the_shared_file_hold_one_copy_of_the_weights(tmp_path):
    """The language model's case in miniature: two graphs with the same 128 MiB MatMul weight. Read through one
    mapping, two sessions add at most 1.3x the weight's bytes to the process's peak; each loading its own (the
    plain ONNX Runtime way), they add about two copies."""
    import subprocess
    import sys

    w = np.random.default_rng(0).standard_normal((4096, 8192), dtype=np.float32)  # 128 MiB
    with WeightStore(tmp_path, min_bytes=EXTERNAL_DATA_BYTES) as store:
        for name, weight_name in (("instruction", "onnx::MatMul_953"), ("frame", "onnx::MatMul_1210")):
            g = helper.make_graph(
                [helper.make_node("MatMul", ["x", weight_name], ["y"])],
                name,
                [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4096])],
                [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8192])],
                [numpy_helper.from_array(w, weight_name)],
            )
            model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
            _save_graph(_export_dir(tmp_path, name, model, per_tensor_files=False), tmp_path / f"{name}.onnx", store)
    assert store.written == w.nbytes

    def peak(share: bool) -> int:
        out = subprocess.run(
            [sys.executable, "-c", SESSIONS_CHILD, str(tmp_path), "1" if share else "0"],
            capture_output=True,
            text=True,
            check=True,
        )
        return int(out.stdout.split()[-1])

    shared, separate = peak(True), peak(False)
    assert shared <= 1.3 * w.nbytes, (shared / w.nbytes, separate / w.nbytes)
    assert separate >= 1.8 * w.nbytes, (shared / w.nbytes, separate / w.nbytes)  # the test can see a second copy


FP16_CHILD = r"""
import sys
import numpy as np
import onnxruntime as ort
from robovlm.runtime.onnx_engine import session_options

def hwm():
    return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM:"))

path, order = sys.argv[1], sys.argv[2]
x = np.ones((1, 2048), np.float16)
base = hwm()
opts = session_options(1, fp16_on_cpu=True)
if order == "default":
    opts.execution_order = ort.ExecutionOrder.DEFAULT
s = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
y = s.run(None, {"x": x})[0]
print(hwm() - base, float(np.abs(y).sum()))
"""


@pytest.mark.slow
def test_fp16_graphs_on_the_cpu_cast_one_weight_at_a_time(tmp_path):
    """The CPU provider computes fp16 MatMuls in fp32 through a Cast per weight. In the default order the Casts,
    which wait on nothing, run long before their MatMuls and their fp32 copies pile up (2x the fp16 weights on top
    of them at full size); the engine's sessions run each just before its consumer: the peak stays near the fp16
    weights. Eight 2048x2048 layers, 64 MiB of fp16 weights."""
    import subprocess
    import sys

    rng = np.random.default_rng(0)
    layers = [(rng.standard_normal((2048, 2048)) / 45).astype(np.float16) for _ in range(8)]
    nodes, inits, prev = [], [], "x"
    for i, w in enumerate(layers):
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [f"h{i}"]))
        prev = f"h{i}"
    g = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [1, 2048])],
        [helper.make_tensor_value_info(prev, TensorProto.FLOAT16, [1, 2048])],
        inits,
    )
    path = tmp_path / "chain.onnx"
    onnx.save_model(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    weights = sum(w.nbytes for w in layers)

    def run(order: str) -> tuple[int, float]:
        out = subprocess.run(
            [sys.executable, "-c", FP16_CHILD, str(path), order], capture_output=True, text=True, check=True
        )
        peak, total = out.stdout.split()[-2:]
        return int(peak), float(total)

    (engine, y_engine), (default, y_default) = run("engine"), run("default")
    assert y_engine == y_default
    assert engine <= 1.7 * weights, (engine / weights, default / weights)
    assert default >= 2 * weights, (engine / weights, default / weights)  # the bound tells the two orders apart
