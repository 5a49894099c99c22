"""``OnnxStepper``: the server's batched step on the graphs of ``robovlm export`` (``--engine onnxruntime``).

The graphs take a batch already: ``instruction`` runs once per new instruction (its outputs kept in the replica's
``PrefixCache``), ``vision`` encodes every robot's head and hand frames in one call, ``frame`` runs the language
model over the left-padded prompts of the batch (the export's parity check covers a padded batch), and ``window``,
whose newest position is one index for the whole batch, runs once per distinct window length (in a steady state,
every robot's window is full: one call).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..model.policy import prompt_ids
from ..model.stateless import Prefix, batch_prefixes
from ..runtime.onnx_engine import OnnxEngine
from ..runtime.wire import StepRequest, checkpoint_id
from ..utils.images import to_pixels
from .prefix_cache import PrefixCache
from .stepper import Stepper


class OnnxStepper(Stepper):
    def __init__(self, checkpoint: str | Path, *, device: str = "cpu", cache_bytes: int = 256 * 2**20) -> None:
        self.engine = OnnxEngine(checkpoint, device=device)
        self.config, self.stats = self.engine.config, self.engine.stats
        self.model_id = checkpoint_id(checkpoint)
        self.device_name = self.engine.device_name
        self.prefixes = PrefixCache(cache_bytes)
        self.sessions = self.engine.sessions
        self._width = int(self.sessions["window"].get_inputs()[0].shape[-1])

    @property
    def width(self) -> int:
        return self._width

    def _encode_prefix(self, instruction: str) -> Prefix:
        ids = np.asarray([prompt_ids(self.engine.tokenizer, self.config.backbone, instruction)], dtype=np.int64)
        mask = np.ones_like(ids)
        hidden, past = self.sessions["instruction"].run(["hidden", "past"], {"ids": ids, "mask": mask})
        return Prefix(torch.from_numpy(hidden), torch.from_numpy(past), torch.from_numpy(mask))

    def _pixels(self, frames: list[np.ndarray]) -> np.ndarray:
        cfg = self.config
        x = to_pixels(np.stack(frames), size=cfg.image_size, mean=cfg.image_mean, std=cfg.image_std)
        return x.numpy().astype(self.engine.float_type)

    def _compute(self, requests: list[StepRequest], prefixes: list[Prefix]) -> tuple[np.ndarray, np.ndarray]:
        cfg, ft = self.config, self.engine.float_type
        b = len(requests)
        valid = np.asarray([r.hand is not None for r in requests])
        images = [r.head for r in requests]
        if cfg.use_hand_rgb:  # camera-major: the B head rows, then the B hand rows (a missing one: any pixels)
            images += [r.hand if r.hand is not None else r.head for r in requests]
        camera = np.repeat(np.arange(len(images) // b, dtype=np.int64), b)
        (tokens,) = self.sessions["vision"].run(["tokens"], {"pixels": self._pixels(images), "camera": camera})
        prefix = batch_prefixes(prefixes)
        feed: dict[str, np.ndarray] = {
            "vision_tokens": tokens,
            "past": prefix.past.numpy(),
            "prefix_mask": prefix.mask.numpy(),
        }
        inputs = self.engine.inputs["frame"]
        if "hand_valid" in inputs:
            feed["hand_valid"] = valid
        if "state" in inputs:
            states = self._normalized_states(requests)
            assert states is not None
            feed["state"] = states.astype(ft)
        if "prefix_hidden" in inputs:
            feed["prefix_hidden"] = prefix.hidden.numpy()
        (feats,) = self.sessions["frame"].run(["feature"], feed)  # (B, D)

        w = self.engine.window_size
        windows = np.zeros((b, w, feats.shape[1]), dtype=ft)
        lengths = np.zeros(b, dtype=np.int64)
        for i, r in enumerate(requests):
            t = r.window.shape[0]
            windows[i, :t] = r.window
            windows[i, t] = feats[i]
            lengths[i] = t
        chunks = np.zeros((b, cfg.fwd_pred_next_n, cfg.action_dim), dtype=np.float32)
        for last in np.unique(lengths):
            rows = np.flatnonzero(lengths == last)
            (out,) = self.sessions["window"].run(["chunk"], {"feats": windows[rows], "last": np.asarray([last])})
            chunks[rows] = out
        return feats.astype(np.float32), chunks
