"""Checkpoints load with one copy of the weights (issue 19): the model is built on the meta device and each tensor
read once into its final buffer, in the engine's dtype. The peak is measured in a fresh process, against the naive
load (a random fp32 model, ``load_file`` beside it, then the engine's cast to fp16) so the bound is shown to tell
the two apart. The naive load's file pages are memory-mapped, so what they add to the resident set depends on the
page cache; its random fp32 init alone is more than the fp16 bound."""

import json
import struct
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from robovlm.configs.model import RoboVLMConfig, load_config
from robovlm.model.checkpoint import CheckpointError
from robovlm.model.policy import RoboVLM
from robovlm.model.weight_loading import WeightFileError, read_tensors

PEAK = """
import json, sys

def hwm():  # this process's peak resident set; ru_maxrss would include the parent's, inherited through fork
    return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM:"))

import torch
from safetensors.torch import load_file
from accelerate import init_empty_weights
from robovlm.model.policy import RoboVLM
from robovlm.configs.model import load_config
path, how = sys.argv[1], sys.argv[2]
config = load_config(path)
with init_empty_weights():  # code pages and lazy imports before the baseline
    RoboVLM(config, load_backbone_weights=False)
before = hwm()
if how == "naive":  # what loading did before: a random fp32 model, the file beside it, then the engine's cast
    model = RoboVLM(config, load_backbone_weights=False)
    model.load_state_dict(load_file(path + "/model.safetensors"), strict=False)
    model.to(torch.float16)
else:
    model = RoboVLM.from_pretrained(path, dtype=getattr(torch, how))
after = hwm()
print(json.dumps({"grew": after - before}))
"""


@pytest.fixture(scope="module")
def wide_ckpt(tmp_path_factory):
    """The demo architecture with a 768-wide, 4-layer language model: ~30M parameters, ~120 MB of fp32 weights."""
    cfg = load_config("models/configs/demo.json").to_dict()
    cfg["backbone"]["config"]["text_config"].update(embed_dim=768, layers=4, attention_heads=8, ffn_dim=3072)
    cfg["act_head"]["hidden_size"] = 128
    model = RoboVLM(RoboVLMConfig.from_dict(cfg))
    path = tmp_path_factory.mktemp("wide") / "ckpt"
    model.save_pretrained(path)
    return path, sum(t.numel() * t.element_size() for t in model.state_dict().values())


def grown_bytes(path, how: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", PEAK, str(path), how], capture_output=True, text=True, timeout=300, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])["grew"]


CAST = """
import json, sys, torch
from robovlm.model.weight_loading import read_tensors

def hwm():
    return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM:"))

before = hwm()
tensors = dict(read_tensors(sys.argv[1], dtype=torch.float16))
print(json.dumps({"grew": hwm() - before, "loaded": sum(t.numel() * 2 for t in tensors.values())}))
"""


def test_a_tensor_larger_than_the_rest_is_cast_without_a_scratch_copy_of_itself(tmp_path):
    """PaliGemma's fp32 embedding is a third of its bf16 weights: a scratch buffer of the largest tensor at the
    file's dtype took the bf16 torch engine to 1.35x its weights. Cast in pieces, the peak is the loaded tensors
    plus one piece (16 MiB); a whole-tensor scratch would be 2x the loaded bytes more."""
    f = tmp_path / "big.safetensors"
    save_file({"embed": torch.randn(64, 1024 * 1024), "bias": torch.randn(8)}, str(f))  # 256 MiB of fp32
    out = subprocess.run([sys.executable, "-c", CAST, str(f)], capture_output=True, text=True, timeout=300, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["grew"] < 1.3 * result["loaded"], result
    assert torch.equal(dict(read_tensors(f, dtype=torch.float16))["embed"], load_file(str(f))["embed"].half())


@pytest.mark.slow
def test_loading_holds_one_copy_of_the_weights_in_the_engines_dtype(wide_ckpt):
    path, weight_bytes = wide_ckpt
    naive = grown_bytes(path, "naive")
    fp32 = grown_bytes(path, "float32")
    fp16 = grown_bytes(path, "float16")
    assert fp32 < 1.2 * weight_bytes, (fp32, weight_bytes)
    assert fp16 < 1.2 * weight_bytes / 2, (fp16, weight_bytes)
    assert naive > 0.9 * weight_bytes, (naive, weight_bytes)  # the fp16 bound tells the two apart


def test_loaded_weights_are_the_saved_ones_in_the_asked_dtype(wide_ckpt):
    path, _ = wide_ckpt
    saved = dict(read_tensors(path / "model.safetensors"))
    model = RoboVLM.from_pretrained(path, dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    own = model.state_dict()
    for name, t in saved.items():
        assert torch.equal(own[name], t.to(torch.bfloat16)), name


def test_truncated_and_malformed_weight_files_are_named(tmp_path):
    f = tmp_path / "w.safetensors"
    save_file({"a": torch.arange(6, dtype=torch.float32).reshape(2, 3), "i": torch.arange(3)}, str(f))
    got = dict(read_tensors(f, dtype=torch.float16))
    assert got["a"].dtype == torch.float16 and got["i"].dtype == torch.int64  # only floating tensors are cast
    assert got["a"].tolist() == [[0, 1, 2], [3, 4, 5]]
    raw = f.read_bytes()
    cases = {
        "short": raw[:4],
        "truncated": raw[:-8],
        "header": struct.pack("<Q", 10**12) + raw[8:],
        "json": struct.pack("<Q", 5) + b"{not!" + raw[13:],
    }
    for what, data in cases.items():
        f.write_bytes(data)
        with pytest.raises(WeightFileError, match="w.safetensors"):
            dict(read_tensors(f))
        assert what


def test_a_truncated_checkpoint_is_a_checkpoint_error(wide_ckpt, tmp_path):
    path, _ = wide_ckpt
    copy = tmp_path / "ckpt"
    copy.mkdir()
    for p in path.iterdir():
        if p.is_file():
            (copy / p.name).write_bytes(p.read_bytes())
    data = (copy / "model.safetensors").read_bytes()
    (copy / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="model.safetensors is corrupt or unreadable"):
        RoboVLM.from_pretrained(copy)
