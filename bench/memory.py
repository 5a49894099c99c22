"""``python -m bench.memory``: peak memory of the real backbones at their real size, against their weight bytes.

A robot's computer holds the engine or nothing: a Jetson Orin NX has 8 or 16 GB shared by CPU and GPU. This writes,
once, a random-weight checkpoint of a model config whose backbone is the shipped full-size architecture
(``models/backbones/<name>/config.json`` put into the backbone's ``config``, byte tokenizer; weights cannot be
downloaded here, and memory does not depend on their values), then runs each measurement in a fresh process and
reports its peak resident set (``VmHWM``) beside the bytes of the weights at the engine's dtype:

- ``torch``: ``build_engine("torch", ...)`` at each dtype (load, warm-up step) plus three control steps;
- ``export``: ``robovlm export --dtype D`` (load in the export's dtype, four graphs, the parity check), against the
  weights at the export's dtype;
- ``onnxruntime``: the ONNX Runtime engine on that export (load, warm-up step, three steps), its sessions reading
  one mapping of ``weights.onnx.data`` (``shared``) or each loading its own copy (``per session``, ONNX Runtime's
  plain way), against the bytes of ``weights.onnx.data`` (the graphs' weights, each tensor once).
- ``lora`` (``--lora``): a LoRA fine-tuning step (r 8 on the language model's attention, vision frozen, gradient
  checkpointing, ``train_setup.frozen_dtype`` bfloat16, batch 1 at the config's window): the peak of loading and
  setting up (the model is read in fp32, as the trainer builds it, then its frozen matrices cast) and, separately,
  the peak of the optimizer steps and their seconds.

The process's own baseline (Python, torch and transformers imported, nothing built) is measured the same way and
reported, so the ratio is the engine's and not the interpreter's.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

from robovlm.runtime.shared_weights import WEIGHTS_FILE
from robovlm.utils.resources import find_resource

CONFIGS = {"kosmos2": "kosmos2.json", "paligemma": "paligemma.json"}
BACKBONES = {"kosmos2": "kosmos-2-patch14-224", "paligemma": "paligemma-3b-pt-224"}

CHILD = r"""
import json, sys

def hwm():  # this process's peak resident set; ru_maxrss would include the parent's, inherited through fork
    return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM:"))

import time
import numpy as np
import torch
import transformers  # noqa: F401  (the baseline includes the libraries)
from robovlm.export.exporter import export_checkpoint, streaming_inputs
from robovlm.runtime.factory import build_engine
from robovlm.runtime.onnx_engine import OnnxEngine
ckpt, what, dtype = sys.argv[1:4]
base = hwm()
seconds = []
if what == "export":
    export_checkpoint(ckpt, sys.argv[4], dtype=dtype, parity_steps=3)
elif what == "lora":  # LoRA (r 8) on the language model, vision frozen, frozen weights in bf16, checkpointing
    from robovlm.model.policy import RoboVLM
    from robovlm.configs.model import TrainSetupConfig, LoraConfig
    from robovlm.training.finetune import apply_train_setup
    from bench.training import synthetic_batch
    model = RoboVLM.from_pretrained(ckpt).train()  # fp32, as the trainer builds it
    model.config.train_setup = TrainSetupConfig(
        freeze_vision=True, lora=LoraConfig(r=8, alpha=16), gradient_checkpointing=True, frozen_dtype=dtype
    )
    apply_train_setup(model)
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=1e-4)
    batch = synthetic_batch(model.config, 1)
    setup_peak = hwm()
    open("/proc/self/clear_refs", "w").write("5")  # restart VmHWM: the steps' own peak
    for i in range(2):  # the first warms up (minutes per step at full size on two cores)
        t0 = time.perf_counter()
        loss = model(batch)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i:
            seconds.append(time.perf_counter() - t0)
    print(json.dumps({"baseline": base, "peak": setup_peak, "step_peak": hwm(), "step_s": float(np.median(seconds))}))
    raise SystemExit(0)
elif what != "none":
    if what == "torch":
        engine = build_engine("torch", ckpt, dtype=dtype)
    else:
        engine = OnnxEngine(ckpt, share_weights=what == "onnxruntime-shared")
        engine.warm_up()
    for head, hand, state, instruction in streaming_inputs(engine.config, 3):
        t0 = time.perf_counter()
        engine.step(head, hand, state, instruction)
        seconds.append(time.perf_counter() - t0)
peak = hwm()
print(json.dumps({"baseline": base, "peak": peak, "step_s": float(np.median(seconds)) if seconds else None}))
"""


def full_size_checkpoint(name: str, work: Path) -> Path:
    """The random-weight checkpoint of ``name`` at full size (written once; ~7 GB for Kosmos-2)."""
    import torch

    from robovlm.configs.model import RoboVLMConfig, load_config
    from robovlm.data.stats import NormStats
    from robovlm.model.policy import RoboVLM

    path = work / f"{name}_full"
    if (path / "model.safetensors").is_file():
        return path
    cfg = load_config(find_resource("models", "configs", CONFIGS[name])).to_dict()
    hf = json.loads(find_resource("models", "backbones", BACKBONES[name], "config.json").read_text())
    cfg["backbone"] = {"type": cfg["backbone"]["type"], "config": hf, "tokenizer": "bytes"}
    config = RoboVLMConfig.from_dict(cfg)
    torch.manual_seed(0)
    model = RoboVLM(config, with_clip=False)
    model.save_pretrained(path, NormStats.identity(state_dim=config.state_dim, action_dim=config.action_dim))
    return path


def weight_bytes(ckpt: Path, dtype: str) -> int:
    from robovlm.model.weight_loading import SAFETENSORS_DTYPES, read_header

    header, _ = read_header(ckpt / "model.safetensors")
    size = {"float32": 4, "float16": 2, "bfloat16": 2}[dtype]
    total = 0
    for info in header.values():
        numel = 1
        for d in info["shape"]:
            numel *= d
        total += numel * (size if SAFETENSORS_DTYPES[info["dtype"]].is_floating_point else 1)
    return total


def measure(ckpt: Path, what: str, dtype: str, *extra: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(ckpt), what, dtype, *extra], capture_output=True, text=True, check=False
    )
    if out.returncode:
        raise SystemExit(f"{what} {dtype} failed (exit {out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__)
    p.add_argument("--model", choices=list(CONFIGS), default="kosmos2")
    p.add_argument("--dtypes", default="float32,bfloat16,float16", help="torch engine dtypes ('' for none)")
    p.add_argument("--exports", default="fp32,fp16", help="export dtypes, each also run in ONNX Runtime ('' for none)")
    p.add_argument("--lora", action="store_true", help="also a LoRA step with frozen weights in bf16 (minutes)")
    p.add_argument("--work", type=Path, default=Path("out/bench_memory"))
    args = p.parse_args(argv)
    ckpt = full_size_checkpoint(args.model, args.work)
    gib = 1024**3
    base = measure(ckpt, "none", "float32")["peak"]
    print(f"{args.model} full size, random weights ({ckpt}); process baseline {base / gib:.2f} GiB\n")
    print("| what | dtype | weights GiB | peak RSS GiB | above baseline / weights | step s |")
    print("| --- | --- | --- | --- | --- | --- |")

    def row(what: str, dtype: str, w: int, r: dict) -> None:
        step = f"{r['step_s']:.2f}" if r.get("step_s") else "-"
        print(f"| {what} | {dtype} | {w / gib:.2f} | {r['peak'] / gib:.2f} | {(r['peak'] - base) / w:.2f}x | {step} |")

    for dtype in filter(None, args.dtypes.split(",")):
        row("torch engine", dtype, weight_bytes(ckpt, dtype), measure(ckpt, "torch", dtype))
    for dtype in filter(None, args.exports.split(",")):
        exported = args.work / f"{ckpt.name}_{dtype}"
        shutil.rmtree(exported, ignore_errors=True)
        torch_dtype = {"fp32": "float32", "fp16": "float16"}[dtype]
        row("robovlm export", dtype, weight_bytes(ckpt, torch_dtype), measure(ckpt, "export", dtype, str(exported)))
        graphs = (exported / "onnx" / WEIGHTS_FILE).stat().st_size
        for mode in ("shared", "per session"):
            r = measure(exported, "onnxruntime-" + mode.replace(" ", "-"), dtype)
            row(f"onnxruntime engine, weights {mode}", dtype, graphs, r)
        shutil.rmtree(exported)
    if args.lora:
        r = measure(ckpt, "lora", "bfloat16")
        w = weight_bytes(ckpt, "bfloat16")
        row("LoRA fine-tuning: load fp32, hold frozen in bf16 (peak of the load)", "bfloat16", w, r)
        steps = {**r, "peak": r["step_peak"]}
        row("LoRA fine-tuning step (batch 1, window 8, peak of the steps)", "bfloat16", w, steps)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
