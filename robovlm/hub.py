"""Hugging Face conventions for checkpoint directories: a local path or a Hub id (``owner/name``, resolved through
the Hub cache, offline included), files written with the permissions any other file gets, and a model card
(``README.md``) with YAML front matter that the Hub and its search read.

Downloading is left to the user's machine (``hf download owner/name``): on a robot computer without network,
``HF_HUB_OFFLINE=1`` makes the lookup use the cache only.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import yaml

log = logging.getLogger(__name__)

REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
CARD = "README.md"


class HubError(FileNotFoundError):
    """A checkpoint is neither a local directory nor in the Hugging Face cache; the message says how to get it."""


def resolve_checkpoint(target: str | Path, *, revision: str | None = None) -> Path:
    """A local directory as is; ``owner/name`` through the Hub cache (``snapshot_download``, which falls back to the
    cache when the Hub cannot be reached or ``HF_HUB_OFFLINE=1``)."""
    path = Path(target)
    if path.exists() or not REPO_ID.match(str(target)):
        return path
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

    try:
        return Path(snapshot_download(str(target), revision=revision))
    except (LocalEntryNotFoundError, OfflineModeIsEnabled, HfHubHTTPError, OSError) as exc:
        raise HubError(f"{target}: no such directory, and not a Hub model in the local cache ({type(exc).__name__}: "
                       f"{exc}); download it where there is network (`hf download {target}`) or pass a "
                       "checkpoint directory") from exc


def fix_permissions(path: Path) -> None:
    """Give a file the mode a newly created file gets under the process umask (safetensors writes 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def write_model_card(path: Path, config, *, datasets: list[str] | None = None,
                     metrics: dict[str, float] | None = None, overwrite: bool = False) -> None:
    """``README.md`` with YAML front matter (license, library, tags, datasets, metrics) and a short body; an existing
    card is kept unless ``overwrite`` (a hand-written card stays)."""
    card = Path(path) / CARD
    if card.exists() and not overwrite:
        return
    front = {
        "license": "apache-2.0",
        "library_name": "robovlm",
        "pipeline_tag": "robotics",
        "tags": ["robotics", "vision-language-action", "ros2", config.backbone.type,
                 *(["lora"] if config.train_setup.lora is not None else [])],
    }
    if datasets:
        front["datasets"] = list(datasets)
    if metrics:
        front["model-index"] = [{"name": Path(path).name, "results": [{
            "task": {"type": "robotics", "name": "behaviour cloning"},
            "metrics": [{"type": "mae", "name": f"validation MAE {k}", "value": float(v)} for k, v in metrics.items()],
        }]}]
    features = [name for name in ("use_vision_resampler", "use_hand_rgb", "use_state", "use_clip_norm",
                                  "use_claw_matrix", "use_hierarchical", "use_advanced_attention")
                if getattr(config, name)]
    body = (f"# {Path(path).name}\n\nA RoboVLM policy ({config.backbone.type} backbone, {config.act_head.type} head, "
            f"window {config.window_size}, chunk {config.fwd_pred_next_n} x {config.action_dim}). Features: "
            f"{', '.join(features) or 'none'}.\n\nRun it with `robovlm_node --ros-args -p model_path:=<this directory>`"
            " or load it with `RoboVLM.from_pretrained`.\n")
    if metrics:
        body += "\nValidation MAE (physical units): " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()) + "\n"
    card.write_text("---\n" + yaml.safe_dump(front, sort_keys=False) + "---\n\n" + body)


def read_model_card(path: Path) -> dict:
    """The YAML front matter of a model card ({} when there is none)."""
    text = (Path(path) / CARD).read_text()
    if not text.startswith("---\n"):
        return {}
    return yaml.safe_load(text.split("---\n", 2)[1]) or {}
