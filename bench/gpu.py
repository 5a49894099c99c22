"""``python -m bench.gpu``: everything a GPU decides, measured in one prepared command on a bare GPU machine.

    PYTHONUNBUFFERED=1 PYTHONPATH=. python3 -m bench.gpu --out out/gpu

For the full-size Kosmos-2 and PaliGemma-3B (random weights from ``models/backbones/*/config.json``, built directly on
the device: no CPU initialisation) in bf16 and fp16: the streaming step with two 224 px cameras and the joint state
(p50, p99 over ``--steps``) against re-running the whole window, peak memory against the weights, parity against
fp32 on the same frames, ``torch.compile`` on and off; the stateless step of ``robovlm serve`` batched for 1-16
robots; one LoRA training step with the frozen weights in bf16. ONNX Runtime's CUDA and TensorRT providers are not
measurable on this workplace's GPU machines (onnxruntime-gpu cannot be brought); their rows say so.

Each row is written to ``OUT/gpu.md`` and ``OUT/gpu.json`` as soon as it is measured (a run cut short keeps what it
measured). Compilation is measured in bf16 only. ``--quick`` drops it (its first call compiles for tens of seconds)
and PaliGemma's fp16 rows;
``--device cpu --tiny`` runs the same code on tiny configs in well under a minute (``make test`` does, so the script
cannot rot between GPU days). Imports only what such a machine has (torch, transformers, numpy; no ROS, MuJoCo, Ray,
PyAV, rosbags): ``tests/packaging/test_gpu_bench.py`` runs it with those hidden. Written for torch >= 2.4 and
transformers >= 5.0 (the GPU machine has torch 2.11 and transformers 5.17).
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from robovlm.configs.model import RoboVLMConfig, load_config
from robovlm.model.policy import RoboVLM
from robovlm.model.stateless import batch_prefixes, encode_prefix, frame_features, window_chunks
from robovlm.utils.resources import find_resource

MODELS = {"kosmos2": ("kosmos2.json", "kosmos-2-patch14-224"), "paligemma": ("paligemma.json", "paligemma-3b-pt-224")}
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
INSTRUCTION = "go around the two boxes on the left and stop at the cup"
TINY_PALIGEMMA = {
    "text_config": {
        "model_type": "gemma",
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 1,
        "head_dim": 16,
        "vocab_size": 300,
    },
    "vision_config": {
        "model_type": "siglip_vision_model",
        "hidden_size": 48,
        "intermediate_size": 96,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "image_size": 56,
        "patch_size": 14,
    },
}
NOT_MEASURABLE = "not measurable on this workplace's GPU machines (onnxruntime-gpu cannot be brought)"


def config(name: str, tiny: bool) -> RoboVLMConfig:
    """The full-size config with the shipped backbone config, or a tiny one of the same classes."""
    if tiny and name == "kosmos2":
        return load_config(find_resource("models", "configs", "demo.json"))
    data = load_config(find_resource("models", "configs", MODELS[name][0])).to_dict()
    if tiny:
        data["backbone"] = {"type": "paligemma", "config": copy.deepcopy(TINY_PALIGEMMA), "tokenizer": "bytes"}
        data |= {
            "image_size": 56,
            "vision_resampler": {"vis_dim": 48, "depth": 1, "dim_head": 16, "heads": 4, "num_latents": 8},
            "act_head": {"type": "lstm", "hidden_size": 64, "num_layers": 1},
        }
    else:
        hf = json.loads(find_resource("models", "backbones", MODELS[name][1], "config.json").read_text())
        data["backbone"] = {"type": data["backbone"]["type"], "config": hf, "tokenizer": "bytes"}
    return RoboVLMConfig.from_dict(data)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_reset(device: torch.device) -> int:
    if device.type != "cuda":
        return 0
    torch.cuda.reset_peak_memory_stats()
    return torch.cuda.memory_allocated()


def peak_since(device: torch.device, before: int) -> float | None:
    return (torch.cuda.max_memory_allocated() - before) / 2**30 if device.type == "cuda" else None


def frames(cfg: RoboVLMConfig, device: torch.device, dtype: torch.dtype, n: int) -> list[tuple[torch.Tensor, ...]]:
    g = torch.Generator().manual_seed(0)
    s = cfg.image_size
    return [
        tuple(
            t.to(device, dtype)
            for t in (
                torch.randn(1, 3, s, s, generator=g),
                torch.randn(1, 3, s, s, generator=g),
                torch.randn(1, cfg.state_dim, generator=g),
            )
        )
        for _ in range(n)
    ]


def timed(fn, device: torch.device) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))] * 1e3


class Report:
    """Rows appended to ``gpu.md`` and ``gpu.json`` as they come."""

    def __init__(self, out: Path, header: dict[str, Any]) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.md, self.js, self.header, self.rows = out / "gpu.md", out / "gpu.json", header, []  # type: ignore[var-annotated]
        self._write()

    def add(self, **row: Any) -> None:
        self.rows.append(row)
        print(json.dumps(row), flush=True)
        self._write()

    def _write(self) -> None:
        h = self.header
        lines = [f"# bench.gpu on {h['device']}", "", f"`{h['command']}`; {h['versions']}", ""]
        lines += ["| model | measurement | dtype | value | detail |", "| --- | --- | --- | --- | --- |"]
        for r in self.rows:
            lines.append(
                f"| {r['model']} | {r['what']} | {r.get('dtype', '')} | {r['value']} | {r.get('detail', '')} |"
            )
        self.md.write_text("\n".join(lines) + "\n")
        self.js.write_text(json.dumps({"header": h, "rows": self.rows}, indent=1))


def header(device: torch.device) -> dict[str, Any]:
    import transformers

    name, driver = platform.processor() or platform.machine(), ""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        try:
            driver = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            driver = "unknown"
    versions = (
        f"torch {torch.__version__} (CUDA {torch.version.cuda}), transformers {transformers.__version__}, "
        f"Python {platform.python_version()}" + (f", driver {driver}" if driver else "")
    )
    return {"device": name, "versions": versions, "command": "python -m bench.gpu " + " ".join(sys.argv[1:])}


def measure_model(name: str, a: argparse.Namespace, device: torch.device, report: Report) -> None:
    cfg = config(name, a.tiny)
    t0 = time.perf_counter()
    with torch.device(device):  # parameters are made and initialised where they will run
        torch.manual_seed(0)
        ref = RoboVLM(cfg, with_clip=False).eval()
    sync(device)
    weights = sum(p.numel() for p in ref.parameters())
    report.add(
        model=name,
        what="build (random weights, on the device)",
        dtype="fp32",
        value=f"{time.perf_counter() - t0:.1f} s",
        detail=f"{weights / 1e6:,.1f} M parameters",
    )
    inputs = frames(cfg, device, torch.float32, a.parity_steps)
    with torch.inference_mode():
        expected = [ref.step(*f, INSTRUCTION).float() for f in inputs]
    for tag in a.dtypes:
        if a.quick and name == "paligemma" and tag == "fp16":
            continue
        try:
            model = copy.deepcopy(ref).to(DTYPES[tag])
            measure_dtype(name, tag, model, cfg, expected, a, device, report)
            del model
        except Exception as exc:  # one failed row is reported and the run goes on (the others are worth having)
            report.add(
                model=name,
                what="streaming step",
                dtype=tag,
                value="failed",
                detail=f"{type(exc).__name__}: {exc}"[:300],
            )
        if device.type == "cuda":
            torch.cuda.empty_cache()
    lora_step(name, ref, cfg, a, device, report)
    del ref
    if device.type == "cuda":
        torch.cuda.empty_cache()


def measure_dtype(name, tag, model, cfg, expected, a, device, report) -> None:  # noqa: ANN001 (one call site)
    dtype = DTYPES[tag]
    inputs = frames(cfg, device, dtype, a.parity_steps)
    with torch.inference_mode():
        model.reset()
        got = [model.step(*f, INSTRUCTION).float() for f in inputs]
    diff = max(float((g - e).abs().max()) for g, e in zip(got, expected))
    report.add(
        model=name,
        what="parity against fp32 (largest action difference, normalized)",
        dtype=tag,
        value=f"{diff:.2e}",
        detail=f"{a.parity_steps} streaming steps on the same frames",
    )
    stream = frames(cfg, device, dtype, cfg.window_size)
    weights_gib = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**30
    compile_here = a.compile and tag == "bf16" and (not a.tiny or name == "kosmos2")  # tiny: one model's path
    for compiled in [False, True] if compile_here else [False]:
        if compiled:
            model.encode_vision = torch.compile(model.encode_vision, **({"backend": "eager"} if a.tiny else {}))
        with torch.inference_mode():
            model.reset()
            for f in stream:  # a full window, and compilation's first calls
                model.step(*f, INSTRUCTION)
            before = peak_reset(device)
            times = [
                timed(lambda i=i: model.step(*stream[i % len(stream)], INSTRUCTION), device) for i in range(a.steps)
            ]
            peak = peak_since(device, before)
        batch = {
            "head_images": torch.cat([f[0] for f in stream])[None],
            "hand_images": torch.cat([f[1] for f in stream])[None],
            "states": torch.cat([f[2] for f in stream])[None],
            "instructions": [INSTRUCTION],
        }
        with torch.inference_mode():
            model(batch)
            rerun = [timed(lambda: model(batch), device) for _ in range(max(3, a.steps // 10))]
        label = "streaming step, torch.compile(encode_vision)" if compiled else "streaming step"
        memory = f", peak {peak:.2f} GiB above {weights_gib:.2f} GiB of weights" if peak is not None else ""
        report.add(
            model=name,
            what=label,
            dtype=tag,
            value=f"p50 {pct(times, 0.5):.1f} ms, p99 {pct(times, 0.99):.1f} ms",
            detail=f"{a.steps} steps, window {cfg.window_size}; whole-window recompute p50 "
            f"{pct(rerun, 0.5):.1f} ms{memory}",
        )
    if tag == "bf16":
        batched(name, model, cfg, a, device, report)


def batched(
    name: str, model: RoboVLM, cfg: RoboVLMConfig, a: argparse.Namespace, device: torch.device, report: Report
) -> None:
    """``robovlm serve``'s stateless step for B robots in one call (each with its own window)."""
    dtype = next(model.parameters()).dtype
    with torch.inference_mode():
        prefix = encode_prefix(model, INSTRUCTION)
        for bsz in a.batches:
            f = frames(cfg, device, dtype, bsz)
            head, hand, state = (torch.cat([x[k] for x in f]) for k in range(3))
            valid = torch.ones(bsz, dtype=torch.bool, device=device)
            prefixes = batch_prefixes([prefix] * bsz)
            windows = [torch.zeros(cfg.window_size - 1, model.dim, device=device, dtype=dtype) for _ in range(bsz)]

            def call() -> None:
                feats = frame_features(model, head, hand, valid, state, prefixes)
                window_chunks(model, [torch.cat([w, feats[i : i + 1]]) for i, w in enumerate(windows)])

            call()
            times = [timed(call, device) for _ in range(max(3, a.steps // 10))]
            p50 = statistics.median(times)
            report.add(
                model=name,
                what=f"serve: stateless step, {bsz} robots in one batch",
                dtype="bf16",
                value=f"{bsz / p50:.0f} steps/s",
                detail=f"p50 {p50 * 1e3:.1f} ms per batch",
            )


def lora_step(
    name: str, ref: RoboVLM, cfg: RoboVLMConfig, a: argparse.Namespace, device: torch.device, report: Report
) -> None:
    """One LoRA training step (frozen weights in bf16, adapters and heads in fp32) on a batch of windows."""
    from robovlm.configs.model import LoraConfig
    from robovlm.training.finetune import apply_train_setup

    model = ref
    model.config.train_setup.lora = LoraConfig(r=8, alpha=16)
    model.config.train_setup.frozen_dtype = "bfloat16"
    apply_train_setup(model)
    model.train()
    bsz, w, n = 2, cfg.window_size, cfg.fwd_pred_next_n
    g = torch.Generator().manual_seed(1)
    s = cfg.image_size
    batch = {
        "head_images": torch.randn(bsz, w, 3, s, s, generator=g).to(device),
        "hand_images": torch.randn(bsz, w, 3, s, s, generator=g).to(device),
        "states": torch.randn(bsz, w, cfg.state_dim, generator=g).to(device),
        "instructions": [INSTRUCTION] * bsz,
        "actions": torch.rand(bsz, w, n, cfg.action_dim, generator=g).to(device) * 2 - 1,
        "action_mask": torch.ones(bsz, w, n, dtype=torch.bool, device=device),
    }
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = model(batch)["loss"]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()
    before = peak_reset(device)
    times = [timed(step, device) for _ in range(1 if a.tiny else 3)]
    peak = peak_since(device, before)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    memory = f", peak {peak:.2f} GiB above the model" if peak is not None else ""
    report.add(
        model=name,
        what="LoRA training step (r 8, frozen weights bf16)",
        dtype="bf16 autocast",
        value=f"{statistics.median(times) * 1e3:.0f} ms",
        detail=f"batch {bsz} windows of {w}, {trainable / 1e6:.1f} M trainable{memory}",
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.gpu", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", type=Path, default=Path("out") / "gpu")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--tiny", action="store_true", help="tiny configs of the same classes (the CI check on a CPU)")
    p.add_argument("--quick", action="store_true", help="no torch.compile rows, no PaliGemma fp16 (under 2 minutes)")
    p.add_argument("--models", default="kosmos2,paligemma")
    a = p.parse_args(argv)
    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA device; use --device cpu --tiny for the CPU check", file=sys.stderr)
        return 2
    a.steps, a.parity_steps = (8, 2) if a.tiny else (50, 8) if a.quick else (200, 16)
    a.batches, a.dtypes = ([1, 2, 4] if a.tiny else [1, 2, 4, 8, 16]), (["bf16"] if a.tiny else ["bf16", "fp16"])
    a.compile = not a.quick
    report = Report(a.out, header(device))
    for name in [m for m in a.models.split(",") if m]:
        measure_model(name, a, device, report)
    for what in ("ONNX Runtime, CUDA execution provider", "ONNX Runtime, TensorRT execution provider"):
        report.add(model="all", what=what, value="not measured", detail=NOT_MEASURABLE)
    print(f"wrote {report.md} and {report.js}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
