"""ONNX export and the ONNX Runtime engine: parity with the torch engine step by step, refusals, providers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from robovlm.export.exporter import ExportError, export_checkpoint, streaming_inputs
from robovlm.model.policy import RoboVLM
from robovlm.runtime.engine import EngineError
from robovlm.runtime.factory import build_engine
from robovlm.runtime.onnx_engine import OnnxEngine
from robovlm.runtime.torch_engine import TorchEngine
from tests import ROOT
from tests.conftest import ALL_FUSION, _node_stats, tiny_config

pytestmark = pytest.mark.slow

TOL = 1e-4  # action chunk, physical units, fp32


def _checkpoint(tmp_path: Path, kind: str, **overrides) -> Path:
    torch.manual_seed(0)
    model = RoboVLM(tiny_config(kind, **overrides))
    if hasattr(model, "instruction_film"):  # as trained: zero-initialized FiLM would be an identity no export tests
        with torch.no_grad():
            for p in model.instruction_film.parameters():
                p.add_(torch.randn_like(p) * 0.3)
    path = tmp_path / "ckpt"
    model.save_pretrained(path, stats=_node_stats())
    return path


def _compare(checkpoint: Path, exported: Path, steps: int = 24) -> float:
    """Max abs difference of the action chunk (physical units) between the two engines over ``steps`` steps
    (instruction changed half way, hand camera missing on some steps)."""
    ref = build_engine("torch", checkpoint)
    onnx = build_engine("onnxruntime", exported)
    worst = 0.0
    for head, hand, state, instruction in streaming_inputs(ref.config, steps, seed=3):
        a = ref.step(head, hand, state, instruction)
        b = onnx.step(head, hand, state, instruction)
        assert a.shape == b.shape
        worst = max(worst, float(np.abs(a - b).max()))
    return worst


@pytest.mark.parametrize(
    "kind,overrides",
    [
        ("kosmos2", {**ALL_FUSION, "act_head": {"type": "lstm"}}),
        ("paligemma", {**ALL_FUSION, "act_head": {"type": "gpt", "num_heads": 2}}),
        (
            "kosmos2",
            {"use_hand_rgb": True, "use_state": True, "use_vision_resampler": False, "act_head": {"type": "mlp"}},
        ),
        ("paligemma", {"use_hand_rgb": False, "use_state": False, "use_hierarchical": True}),
    ],
    ids=["kosmos2-all-fusion-lstm", "paligemma-all-fusion-gpt", "kosmos2-native-projector-mlp", "paligemma-head-only"],
)
def test_onnx_engine_matches_torch_step_by_step(tmp_path, kind, overrides):
    ckpt = _checkpoint(tmp_path, kind, **overrides)
    out = tmp_path / "exported"
    report = export_checkpoint(ckpt, out)
    assert report["end_to_end_max_abs_diff_physical"] <= TOL
    assert max(report["graphs_max_abs_diff"].values()) <= TOL
    on_disk = json.loads((out / "onnx" / "parity.json").read_text())
    assert on_disk["end_to_end_steps"] == 20 and set(on_disk["graphs_max_abs_diff"]) == {
        "vision",
        "instruction",
        "frame",
        "window",
    }
    assert _compare(ckpt, out) <= TOL
    for name in ("config.json", "model.safetensors", "stats.json"):  # a complete checkpoint: torch loads it too
        assert (out / name).is_file()


def test_demo_checkpoint_exports_and_matches(tmp_path):
    out = tmp_path / "demo"
    report = export_checkpoint(ROOT / "models" / "demo", out)
    assert report["end_to_end_max_abs_diff_physical"] <= TOL
    written = {p.name for p in (out / "onnx").iterdir()}
    graphs = {"vision.onnx", "instruction.onnx", "frame.onnx", "window.onnx"}
    assert written == graphs | {"weights.onnx.data", "manifest.json", "parity.json"}, written
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")], "no staging or exporter files left"
    assert _compare(ROOT / "models" / "demo", out, steps=20) <= TOL


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("onnx")
    ckpt = _checkpoint(tmp, "kosmos2", **ALL_FUSION)
    out = tmp / "exported"
    export_checkpoint(ckpt, out, parity_steps=2)
    return out


def test_a_new_instruction_recomputes_the_cache_and_clears_the_window(exported):
    engine, fresh = OnnxEngine(exported), OnnxEngine(exported)
    frames = list(streaming_inputs(engine.config, 6, seed=5))
    for head, hand, state, _ in frames[:5]:
        engine.step(head, hand, state, "go left around the box to the cup")
    head, hand, state, _ = frames[5]
    after = engine.step(head, hand, state, "stop")
    assert np.allclose(after, fresh.step(head, hand, state, "stop"), atol=1e-6)


FP16_CASES = [
    ("kosmos2", ALL_FUSION),
    ("paligemma", {}),  # the fusion of models/configs/paligemma.json
    ("paligemma", ALL_FUSION),
]


@pytest.mark.parametrize("kind, fusion", FP16_CASES, ids=["kosmos2-all-fusion", "paligemma", "paligemma-all-fusion"])
def test_fp16_export_runs_close_to_torch_fp16(tmp_path, caplog, kind, fusion):
    """PaliGemma too: its graphs compute in fp16 throughout (once torch.onnx's fp32 attention mask made every layer
    after the first attention fp32, with fp32 copies of the weights, and its full-size export failed)."""
    import onnx

    ckpt = _checkpoint(tmp_path, kind, **fusion)
    report = export_checkpoint(ckpt, tmp_path / "fp16", dtype="fp16", parity_steps=8)
    for graph in ("vision", "instruction", "frame", "window"):
        proto = onnx.load(str(tmp_path / "fp16" / "onnx" / f"{graph}.onnx"), load_external_data=False)
        assert onnx.TensorProto.FLOAT not in {o.type.tensor_type.elem_type for o in proto.graph.output}, graph
        weights = [(w.data_type, int(np.prod(w.dims))) for w in proto.graph.initializer]
        fp32 = sum(n for t, n in weights if t == onnx.TensorProto.FLOAT)
        assert fp32 <= 0.01 * sum(n for _, n in weights), (graph, fp32)  # at most the norms' folded 1 + weight
    assert report["dtype"] == "float16"
    assert report["end_to_end_max_abs_diff_physical"] <= 0.05  # half precision: a few ulp of the action range
    assert "costs memory and saves nothing" not in caplog.text  # the exporter's own check runs on the CPU on purpose
    engine = build_engine("onnxruntime", tmp_path / "fp16")
    assert "export with --dtype fp32" in caplog.text  # fp16 on the CPU provider: said, not refused
    head, hand, state, instruction = next(streaming_inputs(engine.config, 1))
    assert np.isfinite(engine.step(head, hand, state, instruction)).all()


def test_an_fp16_export_whose_graphs_compute_in_fp32_is_refused(tmp_path, monkeypatch):
    """The attention torch.onnx exports with an fp32 mask (what PaliGemma's fp16 graphs had): refused by name,
    instead of graphs with fp32 copies of the language model's weights."""
    from robovlm.model.backbone import BackboneAdapter

    monkeypatch.setattr(BackboneAdapter, "use_traceable_attention", lambda self: None)
    with pytest.raises(ExportError, match="fp16 instruction graph computes in fp32"):
        export_checkpoint(_checkpoint(tmp_path, "paligemma"), tmp_path / "fp16", dtype="fp16")
    assert not (tmp_path / "fp16" / "onnx").exists()


# End-to-end max abs difference from torch fp32 (action chunk, physical units) of quantized exports: measured on this
# tiny random model at 0.075 (int8) and 0.016 (int4), bounded with room; on models/demo 0.0024 and 0.023 m/s.
QUANTIZED_TOL = {"int8": 0.15, "int4": 0.05}


@pytest.mark.parametrize("mode", ["int8", "int4"])
def test_a_quantized_export_runs_close_to_torch_and_keeps_one_copy_of_its_weights(tmp_path, monkeypatch, mode):
    import onnx

    from robovlm.export import quantize

    monkeypatch.setattr(quantize, "INT8_PASS_BYTES", 64 * 1024)  # int8 in several passes, as at full size
    passes = []
    run_pass = quantize._run_pass
    monkeypatch.setattr(quantize, "_run_pass", lambda *a, **k: passes.append(1) or run_pass(*a, **k))
    ckpt = _checkpoint(tmp_path, "kosmos2", **ALL_FUSION)
    out = tmp_path / mode
    report = export_checkpoint(ckpt, out, quantize=mode)
    assert len(passes) > 8 if mode == "int8" else not passes, len(passes)  # int4: MatMulNBits in one go
    assert report["quantize"] == mode and json.loads((out / "onnx" / "manifest.json").read_text())["quantize"] == mode
    kinds = {"int8": {"MatMulInteger", "DynamicQuantizeMatMul"}, "int4": {"MatMulNBits"}}[mode]
    for graph in ("vision", "instruction", "frame"):
        ops = {n.op_type for n in onnx.load(str(out / "onnx" / f"{graph}.onnx"), load_external_data=False).graph.node}
        assert ops & kinds, (graph, sorted(ops))
    assert report["end_to_end_max_abs_diff_physical"] <= QUANTIZED_TOL[mode], report
    assert _compare(ckpt, out, steps=8) <= QUANTIZED_TOL[mode]
    written = {p.name for p in (out / "onnx").iterdir()}
    assert written == {f"{g}.onnx" for g in ("vision", "instruction", "frame", "window")} | {
        "weights.onnx.data",
        "manifest.json",
        "parity.json",
    }


def test_export_refuses_what_it_cannot_write(tmp_path):
    ckpt = _checkpoint(tmp_path, "kosmos2")
    with pytest.raises(ExportError, match="opset 17"):
        export_checkpoint(ckpt, tmp_path / "x", opset=13)
    with pytest.raises(ExportError, match="--dtype"):
        export_checkpoint(ckpt, tmp_path / "x", dtype="int8")
    with pytest.raises(ExportError, match="--quantize must be one of"):
        export_checkpoint(ckpt, tmp_path / "x", quantize="int2")
    with pytest.raises(ExportError, match="export with --dtype fp32"):
        export_checkpoint(ckpt, tmp_path / "x", dtype="fp16", quantize="int8")
    assert not (tmp_path / "x").exists(), "nothing is written before the checks pass"


def test_a_quantized_export_that_would_not_fit_in_memory_is_refused_before_it_starts(tmp_path, monkeypatch):
    """A quantizer that would not fit (ONNX Runtime's int4 one holds 1.6 copies of a graph; the int8 one a quarter
    plus one pass): on a machine without that much the export says so before the model's graphs are written, not
    the OOM killer later."""
    from robovlm.export import exporter, quantize

    with pytest.raises(quantize.QuantizeMemoryError, match="int4 needs about 1.6 GiB"):
        quantize.check_memory(1024**3, "int4", "a graph", available=1024**3)
    quantize.check_memory(1024**3, "int8", "a graph", available=2 * 1024**3)  # fits: no error
    with pytest.raises(quantize.QuantizeMemoryError, match=r"int8 needs about 1.8 GiB \(0.25 copies .* one 0.5 GiB"):
        quantize.check_memory(1024**3, "int8", "a graph", available=1024**3)
    ckpt = _checkpoint(tmp_path, "kosmos2")
    monkeypatch.setattr(exporter, "available_bytes", lambda: 0)
    monkeypatch.setitem(quantize.QUANTIZER_COPIES, "int8", 1e4)  # the tiny model's graphs, as if they were big
    with pytest.raises(ExportError, match=r"int8 needs about .* GiB \(10000 copies of"):
        export_checkpoint(ckpt, tmp_path / "x", quantize="int8")
    assert not list(tmp_path.glob("*x*")), "nothing is written when the memory check fails"


def test_engine_errors_name_the_fix(tmp_path, exported):
    ckpt = _checkpoint(tmp_path, "kosmos2")
    with pytest.raises(EngineError, match="robovlm export"):
        build_engine("onnxruntime", ckpt)
    with pytest.raises(EngineError, match="torch engine"):
        build_engine("onnxruntime", exported, dtype="bfloat16")
    with pytest.raises(EngineError, match="device 'cuda'"):
        build_engine("onnxruntime", exported, tensorrt=True)
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        with pytest.raises(EngineError, match="CUDA execution provider"):  # never a silent CPU fallback
            build_engine("onnxruntime", exported, device="cuda")
    (exported.parent / "broken").mkdir()
    for item in exported.iterdir():
        if item.is_file():
            (exported.parent / "broken" / item.name).write_bytes(item.read_bytes())
    (exported.parent / "broken" / "onnx").mkdir()
    manifest = (exported / "onnx" / "manifest.json").read_text()
    (exported.parent / "broken" / "onnx" / "manifest.json").write_text(manifest)
    with pytest.raises(EngineError, match="incomplete"):
        build_engine("onnxruntime", exported.parent / "broken")


def test_an_export_that_fails_or_is_killed_leaves_nothing_the_engine_would_load(tmp_path, monkeypatch, exported):
    import os
    import shutil
    import signal
    import subprocess
    import sys
    import time

    import robovlm.export.exporter as export_module

    ckpt = _checkpoint(tmp_path, "kosmos2")
    # A copy of a finished export without its parity report (killed between the graphs and the check): refused.
    partial = tmp_path / "partial"
    shutil.copytree(exported, partial)
    (partial / "onnx" / "parity.json").unlink()
    with pytest.raises(EngineError, match="no parity.json: it was interrupted before its parity check"):
        build_engine("onnxruntime", partial)
    # A failure during the parity run, to a new directory and in place: nothing appears, no staging is left.
    monkeypatch.setattr(export_module, "parity_report", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    for out in (tmp_path / "new", ckpt):
        with pytest.raises(RuntimeError, match="boom"):
            export_checkpoint(ckpt, out)
        assert not (out / "onnx").exists()
    assert not (tmp_path / "new").exists() and not list(tmp_path.glob(".export-*"))
    monkeypatch.undo()
    # The real thing: `robovlm export` killed while it writes its graphs.
    proc = subprocess.Popen(
        [sys.executable, "-m", "robovlm.cli", "export", str(ckpt), "--out", str(tmp_path / "k")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    end = time.monotonic() + 120
    while time.monotonic() < end and not list(tmp_path.glob(".export-k.*/onnx/vision.onnx")):
        time.sleep(0.01)
    assert list(tmp_path.glob(".export-k.*/onnx/vision.onnx")), "the export never started writing"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert not (tmp_path / "k").exists()
    with pytest.raises(EngineError):
        build_engine("onnxruntime", tmp_path / "k")
    export_checkpoint(ckpt, tmp_path / "k", parity_steps=2)  # the next export clears the dead one's staging
    assert not list(tmp_path.glob(".export-*")) and build_engine("onnxruntime", tmp_path / "k").name == "onnxruntime"


def test_export_errors_are_one_line(tmp_path, capsys):
    from robovlm.cli import main

    ckpt = _checkpoint(tmp_path, "kosmos2")
    (tmp_path / "a_file").write_text("")
    assert main(["export", str(ckpt), "--out", str(tmp_path / "a_file" / "x")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1 and "a_file" in err, err


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_torch_engine_dtype_smoke(checkpoint, dtype):
    """Weights cast once at load; a warm-up step on build; finite chunks close to float32."""
    engine = build_engine("torch", checkpoint, dtype=dtype)
    assert next(engine.model.parameters()).dtype == getattr(torch, dtype)
    reference = build_engine("torch", checkpoint)
    assert engine.device_name.startswith("cpu ")
    for head, hand, state, instruction in streaming_inputs(engine.config, 4):
        got, want = engine.step(head, hand, state, instruction), reference.step(head, hand, state, instruction)
        assert np.isfinite(got).all()
        assert np.abs(got - want).max() <= (1e-5 if dtype == "float32" else 0.25)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_torch_engine_on_cuda(checkpoint, dtype):
    engine = build_engine("torch", checkpoint, device="cuda", dtype=dtype)
    assert engine.device_name.startswith("cuda:")
    head, hand, state, instruction = next(streaming_inputs(engine.config, 1))
    assert np.isfinite(engine.step(head, hand, state, instruction)).all()


def test_torch_engine_over_a_model_in_memory_matches_the_loaded_one(checkpoint):
    a = TorchEngine(checkpoint)
    b = TorchEngine.from_model(RoboVLM.from_pretrained(checkpoint))
    for head, hand, state, instruction in streaming_inputs(a.config, 3):
        assert np.array_equal(a.step(head, hand, state, instruction), b.step(head, hand, state, instruction))


# ------------------------------------------------------------------------------------------------ the node
@pytest.mark.dds
@pytest.mark.parametrize("engine_process", [True, False], ids=["process", "thread"])
def test_node_drives_with_the_onnxruntime_engine(checkpoint, tmp_path, harness_factory, engine_process):
    """The node on an exported checkpoint: commands flow over DDS, within the limits, and diagnostics name the
    engine; deactivate ends with a zero."""
    from diagnostic_msgs.msg import DiagnosticStatus

    from tests.ros_harness import VMAX, activate, node_params, statuses

    out = tmp_path / "exported"
    export_checkpoint(checkpoint, out, parity_steps=2)
    h = harness_factory(node_params(str(out), engine="onnxruntime", engine_process=engine_process))
    activate(h)
    assert h.node.supervisor.engine.name.startswith("onnxruntime")
    h.start_feeding()
    assert h.wait_for(lambda: any(abs(v[0]) > 0 for _, v in h.commands()), 60), "no motion from the ONNX engine"
    assert all(np.all(np.abs(v) <= VMAX + 1e-9) for _, v in h.commands())
    assert h.wait_for(lambda: len(h.rec.diagnostics) > 0, 5)
    level, _, values, hardware_id = statuses(h)["model"]
    assert level == DiagnosticStatus.OK and values["engine"].startswith("onnxruntime") and hardware_id.startswith("cpu")
    h.stop_feeding()
    h.node.trigger_deactivate()
    assert h.wait_for(lambda: h.commands() and np.all(h.commands()[-1][1] == 0), 5)
