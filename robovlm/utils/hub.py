"""Hugging Face conventions for checkpoint directories: a local path or an explicit Hub reference
(``hf://owner/name``, resolved through the Hub cache), files written with the permissions any other file gets, and
a model card (``README.md``) with YAML front matter that the Hub and its search read.

A path is local unless it says otherwise: ``models/demo`` started from another directory is a missing directory,
never a repository to look up, so a robot computer never makes a network call (or downloads whatever a look-alike
repository holds) because of a relative path. Downloading is left to the user (``hf download owner/name``); on a
robot computer without network, ``HF_HUB_OFFLINE=1`` keeps even ``hf://`` on the local cache.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import yaml

log = logging.getLogger(__name__)

HUB_SCHEME = "hf://"
"""The explicit form of a Hub reference: ``hf://owner/name`` (optionally ``@revision``)."""
REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
CARD = "README.md"


class HubError(FileNotFoundError):
    """A checkpoint is not a local directory, or a Hub reference that is not in the local cache; the message says
    which path was tried and how to get it."""


def resolve_checkpoint(target: str | Path, *, revision: str | None = None) -> Path:
    """A local checkpoint directory, checked to exist; ``hf://owner/name[@revision]`` through the Hub cache
    (``snapshot_download``, which uses the cache alone when ``HF_HUB_OFFLINE=1`` or the Hub cannot be reached)."""
    text = str(target)
    if not text.startswith(HUB_SCHEME):
        path = Path(target)
        if path.is_dir():
            return path
        what = "is not a directory" if path.exists() else "does not exist"
        hint = f" (for the Hugging Face Hub model {text!r}, write {HUB_SCHEME}{text})" if REPO_ID.match(text) else ""
        where = "" if path.is_absolute() else f" (relative to the working directory: {path.resolve()})"
        raise HubError(f"checkpoint directory '{text}' {what}{where}{hint}")
    repo = text[len(HUB_SCHEME) :]
    if "@" in repo:
        repo, revision = repo.split("@", 1)
    if not REPO_ID.match(repo):
        raise HubError(f"'{text}' is not a Hub reference of the form {HUB_SCHEME}owner/name[@revision]")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

    try:
        return Path(snapshot_download(repo, revision=revision))
    except (LocalEntryNotFoundError, OfflineModeIsEnabled, HfHubHTTPError, OSError) as exc:
        raise HubError(
            f"{text}: not a Hub model in the local cache ({type(exc).__name__}: {exc}); download it "
            f"where there is network (`hf download {repo}`) or pass a checkpoint directory"
        ) from exc


def fix_permissions(path: Path) -> None:
    """Give a file the mode a newly created file gets under the process umask (safetensors writes 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def write_model_card(
    path: Path,
    config,
    *,
    datasets: list[str] | None = None,
    metrics: dict[str, float] | None = None,
    overwrite: bool = False,
) -> None:
    """``README.md`` with YAML front matter (license, library, tags, datasets, metrics) and a short body; an existing
    card is kept unless ``overwrite`` (a hand-written card stays)."""
    card = Path(path) / CARD
    if card.exists() and not overwrite:
        return
    front = {
        "license": "apache-2.0",
        "library_name": "robovlm",
        "pipeline_tag": "robotics",
        "tags": [
            "robotics",
            "vision-language-action",
            "ros2",
            config.backbone.type,
            *(["lora"] if config.train_setup.lora is not None else []),
        ],
    }
    if datasets:
        front["datasets"] = list(datasets)
    if metrics:
        front["model-index"] = [
            {
                "name": Path(path).name,
                "results": [
                    {
                        "task": {"type": "robotics", "name": "behaviour cloning"},
                        "metrics": [
                            {"type": "mae", "name": f"validation MAE {k}", "value": float(v)}
                            for k, v in metrics.items()
                        ],
                    }
                ],
            }
        ]
    features = [
        name
        for name in (
            "use_vision_resampler",
            "use_hand_rgb",
            "use_state",
            "use_clip_norm",
            "use_claw_matrix",
            "use_hierarchical",
            "use_advanced_attention",
        )
        if getattr(config, name)
    ]
    body = (
        f"# {Path(path).name}\n\nA RoboVLM policy ({config.backbone.type} backbone, {config.act_head.type} head, "
        f"window {config.window_size}, chunk {config.fwd_pred_next_n} x {config.action_dim}). Features: "
        f"{', '.join(features) or 'none'}.\n\nRun it with `robovlm_node --ros-args -p model_path:=<this directory>`"
        " or load it with `RoboVLM.from_pretrained`.\n"
    )
    if metrics:
        body += "\nValidation MAE (physical units): " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()) + "\n"
    card.write_text("---\n" + yaml.safe_dump(front, sort_keys=False) + "---\n\n" + body)


def read_model_card(path: Path) -> dict:
    """The YAML front matter of a model card ({} when there is none)."""
    text = (Path(path) / CARD).read_text()
    if not text.startswith("---\n"):
        return {}
    return yaml.safe_load(text.split("---\n", 2)[1]) or {}
