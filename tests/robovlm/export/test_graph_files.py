"""What ``robovlm export`` leaves in ``onnx/`` when a graph is over 2 GB (issue 19): the TorchScript exporter then
writes every initializer as its own file next to the graph. That layout is written here on a small graph (the
exporter cannot be made to write it under 2 GB) and passed through the exporter's own ``_save_graph``."""

import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from robovlm.export.exporter import EXTERNAL_DATA_BYTES, _save_graph


def _graph() -> onnx.ModelProto:
    big = np.arange(EXTERNAL_DATA_BYTES // 4 + 16, dtype=np.float32)  # one initializer over the threshold
    small = np.ones(4, dtype=np.float32)
    inits = [numpy_helper.from_array(big, "onnx__MatMul_4016"), numpy_helper.from_array(small, "model.bias")]
    nodes = [
        helper.make_node("ReduceSum", ["onnx__MatMul_4016"], ["s"], keepdims=0),
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


def test_the_exporters_per_tensor_files_never_reach_the_onnx_directory(tmp_path):
    onnx_dir, exported = tmp_path / "onnx", tmp_path / ".frame.export" / "frame.onnx"
    onnx_dir.mkdir()
    exported.parent.mkdir()
    onnx.save_model(  # the exporter's layout over 2 GB: one file per initializer, named after it
        _graph(), str(exported), save_as_external_data=True, all_tensors_to_one_file=False, size_threshold=0
    )
    assert {p.name for p in exported.parent.iterdir()} == {"frame.onnx", "onnx__MatMul_4016", "model.bias"}
    os.chmod(exported.parent / "onnx__MatMul_4016", 0o600)

    _save_graph(exported, onnx_dir / "frame.onnx")

    assert not exported.parent.exists()
    assert {p.name for p in tmp_path.iterdir()} == {"onnx"}
    assert sorted(p.name for p in onnx_dir.iterdir()) == ["frame.onnx", "frame.onnx.data"]
    umask = os.umask(0)
    os.umask(umask)
    for p in onnx_dir.iterdir():
        assert p.stat().st_mode & 0o777 == 0o666 & ~umask, p
    model = onnx.load(str(onnx_dir / "frame.onnx"))
    values = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    assert values["onnx__MatMul_4016"][-1] == EXTERNAL_DATA_BYTES // 4 + 15 and values["model.bias"].sum() == 4
    onnx.checker.check_model(str(onnx_dir / "frame.onnx"))


def test_a_small_graph_is_saved_whole(tmp_path):
    exported = tmp_path / ".window.export" / "window.onnx"
    exported.parent.mkdir()
    model = _graph()
    del model.graph.initializer[0]
    model.graph.node[0].CopyFrom(helper.make_node("ReduceSum", ["model.bias"], ["s"], keepdims=0))
    onnx.save_model(model, str(exported))
    _save_graph(exported, tmp_path / "window.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["window.onnx"]
