"""``robovlm export``: a checkpoint -> the same checkpoint plus ONNX graphs of its streaming step, with a parity report.

Layout written under ``out/onnx/``: ``vision.onnx``, ``instruction.onnx``, ``frame.onnx``, ``window.onnx``, their
weights of 1 KiB and more in one ``weights.onnx.data`` (each tensor once: the language model that ``instruction``
and ``frame`` both run is stored, and loaded, once; ``weight_store``), ``manifest.json`` (what each graph takes and
gives, dtype, opset, versions) and ``parity.json`` (max abs difference against torch per graph and end to end).

Memory: the model is loaded once, in the export's dtype; graphs are written one at a time, their weights streamed
into the shared file; the torch side of the parity check is computed and the model freed before ONNX Runtime loads
the graphs, so the export never holds the model and the sessions at once. glibc's mmap threshold is fixed first
(``utils.memory``): the blocks one graph's export frees otherwise stay resident under the next (Kosmos-2 with 10
of its 24 layers: 6.5 against 5.7 GiB peak for 3.1 GiB of weights).

Everything is written to a hidden staging directory beside ``out`` and moved into place only after the parity
check, so an export that is killed, runs out of disk or fails its check leaves no half-written ``onnx/`` for the
engine to load (``OnnxEngine`` also refuses a directory without a manifest and a parity report).

Exporter: torch's TorchScript-based exporter (``dynamo=False``). Measured on the tiny configs of the tests,
``torch.export`` (the dynamo exporter) fails on the frame graph, whose language model extends a cache built from an
input tensor, and on Gemma it traced a mask shortcut that is wrong for a left-padded batch; the TorchScript exporter
gives all four graphs within 1e-6 of torch on padded batches of other sizes than the example.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers.cache_utils import DynamicLayer

from ..errors import UserError
from ..model.policy import RoboVLM
from ..utils.hub import fix_permissions
from ..utils.memory import keep_large_blocks_unmapped
from .graphs import FrameGraph, InstructionGraph, VisionGraph, WindowGraph, fp32_leaks, frame_inputs
from .quantize import QUANTIZE_MODES, QuantizeMemoryError, available_bytes, check_memory, quantize_graph
from .weight_store import WeightStore

log = logging.getLogger(__name__)

ONNX_DIR = "onnx"
MANIFEST = "manifest.json"
PARITY = "parity.json"
GRAPHS = ("vision", "instruction", "frame", "window")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16}
MIN_OPSET = 17  # LayerNormalization is an operator from opset 17 on
EXTERNAL_DATA_BYTES = 1 << 10  # initializers at least this large go to weights.onnx.data (ONNX Runtime's own default)


class ExportError(UserError, ValueError):
    """The checkpoint or the options cannot be exported; the message says why and what to change."""


@dataclass(frozen=True)
class GraphSpec:
    inputs: list[str]
    outputs: list[str]
    dynamic_axes: dict[str, dict[int, str]]


def graph_specs(model: RoboVLM) -> dict[str, GraphSpec]:
    """Inputs, outputs and dynamic axes of each graph (B batch, N images, L instruction tokens)."""
    frame_in = frame_inputs(model)
    frame_axes = {
        "vision_tokens": {0: "n"},
        "hand_valid": {0: "b"},
        "state": {0: "b"},
        "past": {2: "b", 4: "l"},
        "prefix_mask": {0: "b", 1: "l"},
        "prefix_hidden": {0: "b", 1: "l"},
    }
    return {
        "vision": GraphSpec(
            ["pixels", "camera"], ["tokens"], {"pixels": {0: "n"}, "camera": {0: "n"}, "tokens": {0: "n"}}
        ),
        "instruction": GraphSpec(
            ["ids", "mask"],
            ["hidden", "past"],
            {"ids": {0: "b", 1: "l"}, "mask": {0: "b", 1: "l"}, "hidden": {0: "b", 1: "l"}, "past": {2: "b", 4: "l"}},
        ),
        "frame": GraphSpec(frame_in, ["feature"], {**{k: frame_axes[k] for k in frame_in}, "feature": {0: "b"}}),
        "window": GraphSpec(["feats", "last"], ["chunk"], {"feats": {0: "b"}, "chunk": {0: "b"}}),
    }


def check_options(dtype: str, opset: int, quantize: str | None = None) -> None:
    """Refuse options the graphs cannot take, before the checkpoint is loaded."""
    if dtype not in DTYPES:
        raise ExportError(f"--dtype must be one of {list(DTYPES)}, got {dtype!r}")
    if quantize is not None and quantize not in QUANTIZE_MODES:
        raise ExportError(f"--quantize must be one of {list(QUANTIZE_MODES)}, got {quantize!r}")
    if quantize is not None and dtype != "fp32":
        raise ExportError(
            f"--quantize {quantize} quantizes the fp32 graphs (ONNX Runtime's dynamic int8 quantization takes "
            "fp32 MatMuls); export with --dtype fp32"
        )
    if opset < MIN_OPSET:
        raise ExportError(f"--opset {opset} is too old: the graphs need LayerNormalization, opset {MIN_OPSET} or newer")


def check_exportable(model: RoboVLM) -> None:
    """Refuse a model whose language-model cache the graphs cannot express, before anything is written."""
    ids, mask = model._prefix(["check"])
    with torch.no_grad():
        _, cache = model.backbone.lm_forward(
            model.backbone.embed_text(ids),
            attention_mask=mask,
            positions=(mask.cumsum(1) - 1).clamp(min=0),
            cache=model.backbone.new_cache(),
        )
    kinds = {type(layer).__name__ for layer in cache.layers}
    if any(type(layer) is not DynamicLayer for layer in cache.layers):
        raise ExportError(
            f"the {model.backbone.type} language model keeps a cache of kind {sorted(kinds)} (sliding "
            "window or quantized layers); the instruction cache is exported as one tensor of full "
            "layers, which this backbone does not use"
        )
    shapes = {tuple(layer.keys.shape) for layer in cache.layers} | {tuple(layer.values.shape) for layer in cache.layers}
    if len(shapes) != 1:
        raise ExportError(
            f"the {model.backbone.type} language model's layers keep keys and values of different "
            f"shapes {sorted(shapes)}; the instruction cache is exported as one stacked tensor"
        )


def sample_inputs(
    model: RoboVLM, *, batch: int = 1, instructions: list[str] | None = None, window: int | None = None, seed: int = 0
) -> dict[str, tuple[torch.Tensor, ...]]:
    """Example inputs of each graph (for tracing and for the per-graph parity check), consistent with each other."""
    cfg = model.config
    dtype = model.action_token.dtype
    g = torch.Generator().manual_seed(seed)
    s, d = cfg.image_size, model.dim
    instructions = instructions or ["go around the box to the cup"] * batch
    ids, mask = model._prefix(instructions)
    with torch.no_grad():
        hidden, past = InstructionGraph(model)(ids, mask)
        cams = model.num_cameras
        camera = torch.arange(cams).repeat_interleave(batch)
        pixels = torch.randn(cams * batch, 3, s, s, generator=g).to(dtype)
        tokens = VisionGraph(model)(pixels, camera)
    values = {
        "vision_tokens": tokens,
        "hand_valid": torch.arange(batch) % 3 != 2,
        "state": torch.randn(batch, cfg.state_dim, generator=g).to(dtype),
        "past": past,
        "prefix_mask": mask,
        "prefix_hidden": hidden,
    }
    t = window or cfg.window_size
    feats = torch.zeros(batch, cfg.window_size, d, dtype=dtype)
    feats[:, :t] = torch.randn(batch, t, d, generator=g).to(dtype)
    return {
        "vision": (pixels, camera),
        "instruction": (ids, mask),
        "frame": tuple(values[k] for k in frame_inputs(model)),
        "window": (feats, torch.tensor([t - 1], dtype=torch.long)),
    }


def graph_modules(model: RoboVLM) -> dict[str, torch.nn.Module]:
    return {
        "vision": VisionGraph(model),
        "instruction": InstructionGraph(model),
        "frame": FrameGraph(model),
        "window": WindowGraph(model),
    }


def _save_graph(exported: Path, path: Path, store: WeightStore) -> None:
    """Move a graph that ``torch.onnx.export`` wrote into ``exported``'s own directory to ``path``, its large
    initializers into ``store`` (streamed one tensor at a time); the directory is removed.

    Over 2 GB the exporter writes every initializer as its own file next to the graph (``onnx__MatMul_4016``,
    ``model.backbone...weight``); exporting into a private directory is what keeps those out of ``onnx/``."""
    store.add_graph(exported, path)
    shutil.rmtree(exported.parent)
    fix_permissions(path)


def _copy_checkpoint(src: Path, out: Path, *, link: bool = False) -> None:
    """The checkpoint's files (not its ``onnx/``) into ``out``; ``link``: hard links where the file system allows
    (an export in place, whose files are moved back onto themselves), so the weights are not copied."""

    def copy(a: str, b: str) -> None:
        try:
            if link:
                os.link(a, b)
                return
        except OSError:  # another file system, or no hard links: copy
            pass
        shutil.copy2(a, b)

    out.mkdir(parents=True, exist_ok=True)
    for item in src.iterdir():
        if item.name == ONNX_DIR:
            continue
        target = out / item.name
        if item.is_dir():
            shutil.copytree(item, target, dirs_exist_ok=True, copy_function=copy)
        else:
            copy(str(item), str(target))


def export_checkpoint(
    checkpoint: str | Path,
    out: str | Path,
    *,
    dtype: str = "fp32",
    opset: int = 17,
    parity_steps: int = 20,
    quantize: str | None = None,
) -> dict:
    """Write ``out`` (the checkpoint's files plus ``onnx/``; ``out`` may be ``checkpoint``) and return the parity
    report. Nothing appears in ``out`` until the export has finished its parity run. ``quantize``: ``int8`` or
    ``int4`` weights (``robovlm.export.quantize``), parity measured against torch fp32."""
    src, out = Path(checkpoint), Path(out)
    check_options(dtype, opset, quantize)
    keep_large_blocks_unmapped()  # each graph's export frees gigabytes the next would otherwise find fragmented
    model = RoboVLM.from_pretrained(src, dtype=DTYPES[dtype])  # one copy of the weights, in the export's dtype
    check_exportable(model)
    model.backbone.use_traceable_attention()
    if quantize is not None:  # the language model's graphs are quantized after the model is freed
        lm = sum(p.numel() * 4 for p in model.backbone.language_model().parameters())
        freed = sum(t.numel() * t.element_size() for t in model.state_dict().values())
        _check_quantize_memory(lm, quantize, "the language model's graphs", available=available_bytes() + freed)
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_staging(out)
    staging = out.parent / f"{STAGING_PREFIX}{out.name}.{os.getpid()}"
    try:
        _copy_checkpoint(src, staging, link=out.exists() and src.resolve() == out.resolve())
        reference = _export_into(model, staging, opset=opset, dtype=dtype, parity_steps=parity_steps, quantize=quantize)
        del model  # quantizing and the sessions of the parity check never have the model beside them
        gc.collect()
        _store_graphs(staging, quantize, reference.export_seconds)
        report = parity_report(staging, reference)
        (staging / ONNX_DIR / PARITY).write_text(json.dumps(report, indent=2) + "\n")
        _move_into_place(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return report


def _check_quantize_memory(graph_bytes: int, mode: str, what: str, *, available: int | None = None) -> None:
    """``quantize.check_memory`` as an ``ExportError``, the one kind of error ``robovlm export`` reports."""
    try:
        check_memory(graph_bytes, mode, what, available=available)
    except QuantizeMemoryError as exc:
        raise ExportError(str(exc)) from exc


STAGING_PREFIX = ".export-"
"""Hidden staging directories beside ``out``: ``.export-<name>.<pid>``."""


def _remove_abandoned_staging(out: Path) -> None:
    """Staging directories of exports that were killed (their process is gone)."""
    for old in out.parent.glob(f"{STAGING_PREFIX}{out.name}.*"):
        pid = old.suffix.lstrip(".")
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(old, ignore_errors=True)


def _move_into_place(staging: Path, out: Path) -> None:
    """``out`` becomes the staged checkpoint: renamed as a whole when new, else item by item (files replaced
    atomically, ``onnx/`` swapped by two renames), so ``out/onnx`` is never a partial export."""
    if not out.exists():
        staging.rename(out)
        return
    for item in staging.iterdir():
        target = out / item.name
        if item.is_dir():
            old = out / f"{STAGING_PREFIX}old-{item.name}.{os.getpid()}"
            if target.exists():
                target.rename(old)
            item.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(item, target)


@dataclass
class TorchReference:
    """What the parity check compares ONNX Runtime against, computed by torch before the model is freed: each
    graph's example inputs and outputs (the tracing example and a padded batch of two), and the streaming engine's
    inputs and action chunks over a run of steps."""

    graphs: dict[str, list[tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]]]
    steps: list[tuple[tuple, np.ndarray]]
    fp16: bool
    export_seconds: dict[str, float]
    quantize: str | None


def _export_into(
    model: RoboVLM, out: Path, *, opset: int, dtype: str, parity_steps: int, quantize: str | None
) -> TorchReference:
    """The four graphs (each in the exporter's own directory, for ``_store_graphs``) and the manifest into
    ``out/onnx``; returns torch's side of the parity check."""
    import onnx
    import onnxruntime

    from ..runtime.engine import DTYPES as ENGINE_DTYPES
    from ..runtime.torch_engine import TorchEngine

    onnx_dir = out / ONNX_DIR
    if onnx_dir.exists():
        shutil.rmtree(onnx_dir)
    onnx_dir.mkdir(parents=True)

    specs, modules, samples = graph_specs(model), graph_modules(model), sample_inputs(model)
    timings = {}
    for name in GRAPHS:
        spec, exported = specs[name], _exporter_path(out, name)
        exported.parent.mkdir()  # the exporter's own files stay out of onnx/
        t0 = time.perf_counter()
        with warnings.catch_warnings():  # the tracer's notes on Python ints in the backbone's code: parity checks
            warnings.simplefilter("ignore")
            torch.onnx.export(
                modules[name],
                samples[name],
                str(exported),
                input_names=spec.inputs,
                output_names=spec.outputs,
                dynamic_axes=spec.dynamic_axes,
                opset_version=opset,
                dynamo=False,
                do_constant_folding=True,
            )
        if dtype == "fp16":
            _check_fp16(name, exported)
        timings[name] = time.perf_counter() - t0
        log.info("exported %s in %.1f s", name, timings[name])

    cfg = model.config
    manifest = {
        "format": 2,  # 2: one weights.onnx.data for all graphs (1: a <graph>.onnx.data each; still loaded)
        "dtype": dtype,
        "quantize": quantize,
        "opset": opset,
        "graphs": {
            name: {"file": f"{name}.onnx", "inputs": specs[name].inputs, "outputs": specs[name].outputs}
            for name in GRAPHS
        },
        "window_size": cfg.window_size,
        "tokens_per_camera": model.tokens_per_camera,
        "cameras": model.num_cameras,
        "width": model.dim,
        "versions": {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__},
    }
    (onnx_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")

    other = sample_inputs(
        model, batch=2, instructions=["go left", "go right around the box to the cup"], window=2, seed=1
    )
    graphs = {}
    with torch.no_grad():
        for name in GRAPHS:
            graphs[name] = []
            for example in (samples[name], other[name]):
                ref = modules[name](*example)
                graphs[name].append((example, ref if isinstance(ref, tuple) else (ref,)))
    engine_dtype = next(k for k, v in ENGINE_DTYPES.items() if v == model.action_token.dtype)
    engine = TorchEngine.from_model(model, dtype=engine_dtype)
    steps = [(inputs, engine.step(*inputs)) for inputs in streaming_inputs(cfg, parity_steps)]
    return TorchReference(graphs, steps, model.action_token.dtype == torch.float16, timings, quantize)


# fp32 bytes an fp16 graph may hold: RMSNorm's ``1 + weight`` is folded in fp32 (transformers computes norms in
# fp32), a vector per norm, a few hundred kB in a full-size model; a leaked layer's weights are far more.
FP32_WEIGHTS_FRACTION = 0.01


def _check_fp16(name: str, path: Path) -> None:
    """Refuse an fp16 graph that computes in fp32 (see ``fp32_leaks``): it would hand the next graph fp32 or hold
    fp32 copies of the weights, and no later step would say so."""
    outputs, fp32, total = fp32_leaks(path)
    if outputs or fp32 > FP32_WEIGHTS_FRACTION * total:
        raise ExportError(
            f"the fp16 {name} graph computes in fp32: outputs {outputs or 'none'} are fp32 and "
            f"{fp32 / 2**20:.1f} of its {total / 2**20:.1f} MiB of weights were folded to fp32 (a backbone op the "
            "tracer records in fp32); export with --dtype fp32"
        )


def _exporter_path(out: Path, name: str) -> Path:
    return out / f".{name}.export" / f"{name}.onnx"


def _store_graphs(out: Path, quantize: str | None, timings: dict[str, float]) -> None:
    """Quantize (if asked) and move each exported graph into ``out/onnx``, its weights streamed into the shared
    file; run after the model is freed, so quantizing a graph never has the model beside it."""
    import onnx

    onnx_dir = out / ONNX_DIR
    with WeightStore(onnx_dir, min_bytes=EXTERNAL_DATA_BYTES) as store:
        for name in GRAPHS:
            exported, path = _exporter_path(out, name), onnx_dir / f"{name}.onnx"
            t0 = time.perf_counter()
            if quantize is not None:  # the quantized graph is written beside the exporter's, in its directory
                graph_bytes = sum(f.stat().st_size for f in exported.parent.iterdir())
                _check_quantize_memory(graph_bytes, quantize, f"the {name} graph")
                quantized = exported.with_name(f"{name}.{quantize}.onnx")
                quantize_graph(exported, quantized, quantize)
                exported = quantized
            _save_graph(exported, path, store)
            onnx.checker.check_model(str(path))
            timings[name] += time.perf_counter() - t0
    if store.path.exists():
        fix_permissions(store.path)
    log.info(
        "graph weights %.1f MB, %.1f MB of them shared between graphs and stored once",
        store.referenced / 1e6,
        (store.referenced - store.written) / 1e6,
    )


def parity_report(out: Path, reference: TorchReference) -> dict:
    """Max abs difference of each graph against its torch module on the example inputs and on a padded batch of
    two, and of the ONNX Runtime engine against ``RoboVLM.step`` over the reference's steps (action chunk, physical
    units), on the CPU execution provider."""
    import onnxruntime as ort

    from ..runtime.onnx_engine import OnnxEngine, session_options

    per_graph: dict[str, float] = {}
    for name in GRAPHS:
        opts = session_options(torch.get_num_threads(), fp16_on_cpu=reference.fp16)
        session = ort.InferenceSession(
            str(out / ONNX_DIR / f"{name}.onnx"), sess_options=opts, providers=["CPUExecutionProvider"]
        )
        names = [i.name for i in session.get_inputs()]
        worst = 0.0
        for example, ref in reference.graphs[name]:
            got = session.run(None, {n: v.numpy() for n, v in zip(names, example)})
            worst = max(
                worst, *(float(np.abs(g.astype(np.float64) - r.double().numpy()).max()) for g, r in zip(got, ref))
            )
        per_graph[name] = worst
        del session  # one graph's session at a time
    engine = OnnxEngine(out, device="cpu", require_parity=False)  # the report is being written
    torch_diff = 0.0
    for step, (inputs, want) in enumerate(reference.steps):
        got = engine.step(*inputs)
        torch_diff = max(torch_diff, float(np.abs(got - want).max()))
        log.debug("parity step %d: %.3g", step, torch_diff)
    return {
        "graphs_max_abs_diff": per_graph,
        "end_to_end_steps": len(reference.steps),
        "end_to_end_max_abs_diff_physical": torch_diff,
        "provider": "CPUExecutionProvider",
        "dtype": "float16" if reference.fp16 else "float32",
        "quantize": reference.quantize,
        "export_seconds": reference.export_seconds,
    }


def streaming_inputs(config, steps: int, *, seed: int = 0):
    """``steps`` control steps of test input: (head, hand, state, instruction). Frames at the camera's size (the
    engines resize them), the hand camera missing on every fifth step, the instruction changed half way."""
    rng = np.random.default_rng(seed)
    instructions = ("go left around the box to the cup", "go right")
    for i in range(steps):
        head = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
        hand = (
            None
            if (config.use_hand_rgb and i % 5 == 4 and config.missing_hand != "error")
            else rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
        )
        state = rng.normal(size=config.state_dim).astype(np.float32)
        yield head, hand, state, instructions[0 if i < steps // 2 else 1]
