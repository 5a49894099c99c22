"""``bench.gpu`` cannot rot between GPU days: its CPU path (``--device cpu --tiny``) runs here as on the bare GPU
machine, with what that machine lacks hidden (ROS, MuJoCo, Ray, PyAV, rosbags, matplotlib), and writes every
row it promises."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests import ROOT

pytestmark = pytest.mark.slow

HIDDEN = ("rclpy", "mujoco", "ray", "av", "rosbags", "matplotlib")


def test_bench_gpu_runs_on_a_machine_without_ros_mujoco_ray_or_pyav(tmp_path):
    hide = "; ".join(f"sys.modules[{m!r}] = None" for m in HIDDEN)  # ``import m`` then raises ImportError
    args = ["--device", "cpu", "--tiny", "--out", str(tmp_path)]
    code = f"import runpy, sys; {hide}; sys.argv[1:] = {args!r}; runpy.run_module('bench.gpu', run_name='__main__')"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "gpu.json").read_text())
    whats = {(r["model"], r["what"]) for r in report["rows"]}
    assert ("kosmos2", "streaming step, torch.compile(encode_vision)") in whats
    for model in ("kosmos2", "paligemma"):
        for what in (
            "streaming step",
            "LoRA training step (r 8, frozen weights bf16)",
            "parity against fp32 (largest action difference, normalized)",
            "serve: stateless step, 4 robots in one batch",
        ):
            assert (model, what) in whats, (model, what)
    assert all(r["value"] != "failed" for r in report["rows"]), [r for r in report["rows"] if r["value"] == "failed"]
    assert "not measurable" in (tmp_path / "gpu.md").read_text() and report["header"]["versions"].startswith("torch")
