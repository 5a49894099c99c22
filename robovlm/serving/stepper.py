"""Steppers: the server's side of a step, for a batch of robots at once (``TorchStepper`` here, ``OnnxStepper`` in
``onnx_stepper.py``; ``stepper_factory.build_stepper`` makes either by name).

A batch holds steps of different robots: different instructions (each prompt's cache from the replica's
``PrefixCache``, left-padded into one batch), different window lengths (``model.stateless.window_chunks``), the hand
camera present in some and missing in others. A step that cannot be run (the model needs a hand frame it was not
given) gets its own error; the others in its batch are answered.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch

from ..configs.model import RoboVLMConfig
from ..data.stats import NormStats
from ..model.policy import MissingInputError, RoboVLM
from ..model.stateless import Prefix, batch_prefixes, encode_prefix, frame_features, window_chunks
from ..runtime.engine import DTYPES, EngineError, device_name
from ..runtime.wire import ModelShape, StepReply, StepRequest, checkpoint_id
from ..utils.images import to_pixels
from .prefix_cache import PrefixCache

log = logging.getLogger(__name__)


class Stepper:
    """What the deployment needs of either engine: the model's shape, the checkpoint's id and ``step_batch``."""

    config: RoboVLMConfig
    stats: NormStats
    model_id: str
    device_name: str
    prefixes: PrefixCache[Prefix]

    def shape(self, width: int) -> ModelShape:
        cfg = self.config
        return ModelShape(
            image_size=cfg.image_size,
            width=width,
            window_size=cfg.window_size,
            state_dim=cfg.state_dim if cfg.use_state else None,
            uses_hand=cfg.use_hand_rgb,
        )

    @property
    def width(self) -> int:
        raise NotImplementedError

    def step_batch(self, requests: list[StepRequest]) -> list[StepReply | Exception]:
        """One engine call for every step that can run; an error in place of each that cannot."""
        t0 = time.perf_counter()
        results: list[StepReply | Exception] = []
        runnable = []
        for r in requests:
            if self.config.use_hand_rgb and r.hand is None and self.config.missing_hand == "error":
                results.append(MissingInputError("a frame has no hand-camera image and missing_hand is 'error'"))
            else:
                results.append(r)  # type: ignore[arg-type]  # replaced below
                runnable.append(r)
        if not runnable:
            return results
        hits = []
        prefixes = []
        for r in runnable:
            prefix, hit = self.prefixes.get(r.instruction, self._encode_prefix)
            prefixes.append(prefix)
            hits.append(hit)
        features, chunks = self._compute(runnable, prefixes)  # (B, D), (B, n, A) normalized
        compute_ms = (time.perf_counter() - t0) * 1e3
        replies = iter(
            StepReply(
                feature=features[i],
                chunk=self.stats.unnormalize_action(chunks[i]),
                model=self.model_id,
                timing={
                    "compute_ms": compute_ms,
                    "batch_size": len(runnable),
                    "cache_hit": hits[i],
                    "started": t0,  # perf_counter on the replica: the deployment turns it into the queue time
                },
            )
            for i in range(len(runnable))
        )
        return [next(replies) if isinstance(r, StepRequest) else r for r in results]

    def warm_up(self) -> None:
        """One blank step, so a replica's first robot does not pay for lazy initialisation (allocator, kernels)."""
        cfg = self.config
        blank = np.zeros((cfg.image_size, cfg.image_size, 3), np.uint8)
        state = np.zeros(cfg.state_dim, np.float32) if cfg.use_state else None
        window = np.zeros((0, self.width), np.float32)
        hand = blank if cfg.use_hand_rgb else None
        self.step_batch([StepRequest("warm up", blank, hand, state, window)])
        self.prefixes.clear()

    def _normalized_states(self, requests: list[StepRequest]) -> np.ndarray | None:
        if not self.config.use_state:
            return None
        return np.stack([self.stats.normalize_state(np.asarray(r.state, np.float32)) for r in requests])

    def _encode_prefix(self, instruction: str) -> Prefix:
        raise NotImplementedError

    def _compute(self, requests: list[StepRequest], prefixes: list[Prefix]) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError


class TorchStepper(Stepper):
    def __init__(
        self, checkpoint: str | Path, *, device: str = "cpu", dtype: str = "float32", cache_bytes: int = 256 * 2**20
    ) -> None:
        if device == "cuda" and not torch.cuda.is_available():
            raise EngineError("device 'cuda' requested but no CUDA device is available to torch")
        if dtype not in DTYPES:
            raise EngineError(f"dtype must be one of {list(DTYPES)}, got {dtype!r}")
        self.dtype = DTYPES[dtype]
        self.model = RoboVLM.from_pretrained(checkpoint, device=torch.device(device), dtype=self.dtype).eval()
        self.device = self.model.action_token.device
        self.config, self.stats = self.model.config, self.model.stats
        self.model_id = checkpoint_id(checkpoint)
        self.device_name = device_name(self.device)
        self.prefixes = PrefixCache(cache_bytes)

    @property
    def width(self) -> int:
        return self.model.dim

    def _encode_prefix(self, instruction: str) -> Prefix:
        return encode_prefix(self.model, instruction)

    def _pixels(self, frames: list[np.ndarray]) -> torch.Tensor:
        cfg = self.config
        return to_pixels(np.stack(frames), size=cfg.image_size, mean=cfg.image_mean, std=cfg.image_std).to(
            self.device, self.dtype
        )

    @torch.inference_mode()
    def _compute(self, requests: list[StepRequest], prefixes: list[Prefix]) -> tuple[np.ndarray, np.ndarray]:
        head = self._pixels([r.head for r in requests])  # (B, 3, S, S)
        hand = hand_valid = None
        if self.config.use_hand_rgb:
            valid = [r.hand is not None for r in requests]
            hand_valid = torch.tensor(valid, device=self.device)
            if any(valid):  # a missing row's pixels are replaced by the marker: any values do
                hand = self._pixels([r.hand if r.hand is not None else r.head for r in requests])
        states = self._normalized_states(requests)
        state = None if states is None else torch.from_numpy(states).to(self.device, self.dtype)
        feats = frame_features(self.model, head, hand, hand_valid, state, batch_prefixes(prefixes))  # (B, D)
        windows = [
            torch.cat([torch.from_numpy(np.asarray(r.window)).to(self.device, self.dtype), feats[i : i + 1]])
            for i, r in enumerate(requests)
        ]
        chunks = window_chunks(self.model, windows)  # (B, n, A)
        return feats.float().cpu().numpy(), chunks.float().cpu().numpy()
