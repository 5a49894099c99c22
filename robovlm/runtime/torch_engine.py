"""``TorchEngine``: ``RoboVLM.step`` in PyTorch on the CPU or a GPU, weights cast once to the engine's dtype."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..model.policy import RoboVLM
from ..utils.images import to_pixels
from .engine import DTYPES, EngineBase, EngineError, device_name


class TorchEngine(EngineBase):
    def __init__(self, checkpoint: str | Path, *, device: str = "cpu", dtype: str = "float32") -> None:
        """``dtype``: the weights are cast once at load (float32 | bfloat16 | float16); pixels and state follow."""
        if device not in ("cpu", "cuda"):
            raise EngineError(f"device must be 'cpu' or 'cuda', got {device!r}")
        if device == "cuda" and not torch.cuda.is_available():
            raise EngineError("device 'cuda' requested but no CUDA device is available to torch")
        if dtype not in DTYPES:
            raise EngineError(f"dtype must be one of {list(DTYPES)}, got {dtype!r}")
        self._setup(RoboVLM.from_pretrained(checkpoint, device=torch.device(device), dtype=DTYPES[dtype]), dtype)

    @classmethod
    def from_model(cls, model: RoboVLM, *, dtype: str = "float32") -> TorchEngine:
        """An engine over a model already in memory (export's parity check, benchmarks)."""
        engine = cls.__new__(cls)
        engine._setup(model, dtype)
        return engine

    def _setup(self, model: RoboVLM, dtype: str) -> None:
        self.dtype = DTYPES[dtype]
        self.model = model.to(self.dtype).eval()
        self.device = self.model.action_token.device
        self.config = self.model.config
        self.stats = self.model.stats
        self.name = "torch" if dtype == "float32" else f"torch {dtype}"
        self.device_name = device_name(self.device)

    def reset(self) -> None:
        self.model.reset()

    def _pixels(self, rgb: np.ndarray) -> torch.Tensor:
        cfg = self.config
        return to_pixels(rgb, size=cfg.image_size, mean=cfg.image_mean, std=cfg.image_std).to(self.device, self.dtype)

    @torch.inference_mode()
    def step(
        self, head_rgb: np.ndarray, hand_rgb: np.ndarray | None, state: np.ndarray | None, instruction: str
    ) -> np.ndarray:
        """RGB uint8 (H, W, 3) frames, raw joint state (S,) -> (n, A) actions in physical units."""
        head = self._pixels(head_rgb)
        hand = self._pixels(hand_rgb) if (hand_rgb is not None and self.uses_hand) else None
        st = None
        if self.uses_state:
            if state is None:
                raise ValueError("the model uses the joint state but none was given")
            st = torch.from_numpy(self.stats.normalize_state(state)).unsqueeze(0).to(self.device, self.dtype)
        chunk = self.model.step(head, hand, st, instruction)[0]  # (n, A) normalized
        return self.stats.unnormalize_action(chunk.float().cpu().numpy())
