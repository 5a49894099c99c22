"""Peak memory of the real backbones at their real size, against their weight bytes (``bench.fullsize`` runs it).

A robot's computer holds the engine or nothing: a Jetson Orin NX has 8 or 16 GB shared by CPU and GPU. This writes,
once, a random-weight checkpoint of a model config whose backbone is the shipped full-size architecture
(``models/backbones/<name>/config.json`` put into the backbone's ``config``, byte tokenizer; weights cannot be
downloaded here, and memory does not depend on their values), then runs each measurement in a fresh process and
reports its peak resident set (``VmHWM``) beside the bytes of the weights at the engine's dtype:

- ``torch``: ``build_engine("torch", ...)`` at each dtype (load, warm-up step) plus three control steps;
- ``export``: ``robovlm export --dtype D`` (load in the export's dtype, four graphs, the parity check), against the
  weights at the export's dtype; ``int8`` / ``int4``: ``--quantize`` from the fp32 graphs, against fp32 weights;
- ``onnxruntime``: the ONNX Runtime engine on that export (load, warm-up step, three steps), its sessions reading
  one mapping of ``weights.onnx.data`` (``shared``) or each loading its own copy (``per session``, ONNX Runtime's
  plain way), against the bytes of ``weights.onnx.data`` (the graphs' weights, each tensor once).
- ``lora``: a LoRA fine-tuning step (r 8 on the language model's attention, vision frozen, gradient
  checkpointing, ``train_setup.frozen_dtype`` bfloat16, batch 1 at the config's window): the peak of loading and
  setting up (the model is read in fp32, as the trainer builds it, then its frozen matrices cast) and, separately,
  the peak of the optimizer steps and their seconds.

The process's own baseline (Python, torch and transformers imported, nothing built) is measured the same way and
reported, so the ratio is the engine's and not the interpreter's.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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
seconds, actions, extra = [], [], {}
if what == "export":  # dtype fp32 | fp16, or int8 | int4: quantized from the fp32 graphs
    quantize = dtype if dtype in ("int8", "int4") else None
    dtype = "fp32" if quantize else dtype
    report = export_checkpoint(ckpt, sys.argv[4], dtype=dtype, parity_steps=3, quantize=quantize)
    extra = {"parity": report["end_to_end_max_abs_diff_physical"]}
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
        actions.append(engine.step(head, hand, state, instruction).tolist())
        seconds.append(time.perf_counter() - t0)
peak = hwm()
step_s = float(np.median(seconds)) if seconds else None
print(json.dumps({"baseline": base, "peak": peak, "step_s": step_s, "actions": actions, **extra}))
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


class Failed(RuntimeError):
    """A measurement that did not finish: over the memory cap, killed, or an error (the message says which)."""


def measure(ckpt: Path, what: str, dtype: str, *extra: str, cap_gib: float | None = None) -> dict:
    """Run one measurement in a fresh process. ``cap_gib``: stop it when its resident set passes this (a row that
    does not fit is reported as such instead of taking the machine into the kernel's OOM killer)."""
    started = time.monotonic()
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(ckpt), what, dtype, *extra], stdout=stdout, stderr=stderr
        )
        over = None
        while child.poll() is None:
            rss = _resident_bytes(child.pid)
            if cap_gib is not None and rss > cap_gib * 1024**3:
                over = rss
                child.kill()
                child.wait()
                break
            time.sleep(0.2)
        stdout.seek(0)
        stderr.seek(0)
        out, err = stdout.read(), stderr.read()
    if over is not None:
        raise Failed(f"stopped at {over / 1024**3:.1f} GiB resident (the cap: {cap_gib} GiB of this 24 GiB machine)")
    if child.returncode:
        tail = err.strip().splitlines()[-1] if err.strip() else ""
        raise Failed(f"exit {child.returncode}{': ' + tail if tail else ''}")
    result = json.loads(out.strip().splitlines()[-1])
    result["wall_s"] = time.monotonic() - started
    return result


def _resident_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))
    except (OSError, StopIteration):  # exited between poll() and the read
        return 0
