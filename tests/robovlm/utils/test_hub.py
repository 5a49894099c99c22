"""Checkpoint directories follow Hugging Face conventions: normal file permissions, a model card with YAML front
matter, and loading by Hub id from the local cache with no network."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from robovlm.model.policy import CheckpointError, RoboVLM
from robovlm.utils.hub import read_model_card
from tests import ROOT
from tests.conftest import tiny_config


def test_saved_files_get_the_umask_permissions_and_a_model_card(tmp_path):
    old = os.umask(0o022)
    try:
        RoboVLM(tiny_config()).save_pretrained(tmp_path / "ck")
    finally:
        os.umask(old)
    for name in ("model.safetensors", "config.json", "stats.json", "README.md"):
        assert (tmp_path / "ck" / name).stat().st_mode & 0o777 == 0o644, name
    card = read_model_card(tmp_path / "ck")
    assert card["license"] == "apache-2.0" and card["library_name"] == "robovlm"
    assert {"robotics", "kosmos2"} <= set(card["tags"])


@pytest.mark.slow
def test_a_hub_id_loads_from_the_local_cache_offline(tmp_path):
    """The layout huggingface_hub writes: models--OWNER--NAME/{refs/main, snapshots/<commit>/...}."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--acme--robovlm-demo"
    shutil.copytree(ROOT / "models" / "demo", repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    code = (
        "from robovlm.model.policy import RoboVLM; m = RoboVLM.from_pretrained('hf://acme/robovlm-demo'); "
        "print(m.config.image_size, m.stats.action_fields)"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "56 ['linear.x', 'linear.y']" in proc.stdout
    code = "from robovlm.model.policy import RoboVLM; RoboVLM.from_pretrained('hf://acme/not-downloaded')"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "hf download acme/not-downloaded" in proc.stderr


def test_a_missing_local_directory_is_named(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        RoboVLM.from_pretrained(tmp_path / "nothing" / "here" / "ck")


def test_a_path_that_looks_like_a_hub_id_is_local_and_never_looked_up(tmp_path, monkeypatch):
    """``models/demo`` from another directory is a missing directory, named with where it was looked for; the Hub
    is only asked for an explicit hf:// reference."""
    import huggingface_hub

    from robovlm.utils.hub import HubError, resolve_checkpoint

    def no_network(*args, **kwargs):
        raise AssertionError(f"the Hub was asked for {args}")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_network)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        HubError,
        match=r"'models/demo' does not exist \(relative to the working directory: " + str(tmp_path / "models" / "demo"),
    ):
        resolve_checkpoint("models/demo")
    with pytest.raises(AssertionError, match="the Hub was asked for"):
        resolve_checkpoint("hf://acme/robovlm-demo")
    with pytest.raises(HubError, match="not a Hub reference"):
        resolve_checkpoint("hf://no-owner")
    (tmp_path / "models" / "demo").mkdir(parents=True)
    assert resolve_checkpoint("models/demo").resolve() == (tmp_path / "models" / "demo").resolve()
