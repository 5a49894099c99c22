"""Inference engines behind one interface: camera frames and joint state in, an action chunk in physical units out.

``TorchEngine`` runs ``RoboVLM.step`` (streaming: only the new frame is encoded); ``OnnxEngine``
(``onnx_engine.py``) runs the graphs of ``robovlm export`` with the same semantics. The node and the simulator
evaluation use the same engines, so what is tested offline is what drives the robot.
"""

from __future__ import annotations

import logging
import os
import platform
from pathlib import Path

import numpy as np
import torch

from ..config import RoboVLMConfig
from ..model.policy import RoboVLM
from .preprocess import to_pixels

log = logging.getLogger(__name__)

ENGINES = ("torch", "onnxruntime")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class EngineError(RuntimeError):
    """The engine cannot be built on this machine (device, files); the message says what to change."""


class EngineBase:
    """What the node needs to know about any engine, derived from its model config."""

    config: RoboVLMConfig
    device_name: str
    """The device that runs the model, in words (diagnostics' hardware_id)."""

    @property
    def uses_hand(self) -> bool:
        return self.config.use_hand_rgb

    @property
    def uses_state(self) -> bool:
        return self.config.use_state

    @property
    def action_dim(self) -> int:
        return self.config.action_dim

    @property
    def state_dim(self) -> int:
        return self.config.state_dim

    def warm_up(self) -> None:
        """One step on blank inputs, then a reset: the first real step does not pay for lazy initialisation
        (allocator, kernels, graph optimisation), which on a GPU costs several times a normal step."""
        size = self.config.image_size
        blank = np.zeros((size, size, 3), dtype=np.uint8)
        state = np.zeros(self.state_dim, dtype=np.float32) if self.uses_state else None
        self.step(blank, blank if self.uses_hand else None, state, "warm up")
        self.reset()


def limit_threads(threads: int) -> None:
    """Bound the CPU threads of this process's model: ``torch.set_num_threads`` sets torch's intra-op pool and the
    OpenMP and MKL thread counts; the variables cover libraries that read them at start-up. One inter-op thread
    (a single streaming step has no independent operators worth a second pool)."""
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # the inter-op pool already started in this process; the intra-op bound still holds
        pass


def device_name(device: torch.device) -> str:
    """What diagnostics show as ``hardware_id``: the GPU's name, or the CPU's model and the threads torch uses."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} {torch.cuda.get_device_name(index)}"
    return f"cpu {cpu_name()} ({torch.get_num_threads()} threads)"


def cpu_name() -> str:
    """The CPU's model name (Linux), or what ``platform`` knows."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:  # not Linux: platform's answer
        pass
    return model


class TorchEngine(EngineBase):
    def __init__(self, checkpoint: str | Path, *, device: str = "cpu", dtype: str = "float32") -> None:
        """``dtype``: the weights are cast once at load (float32 | bfloat16 | float16); pixels and state follow."""
        if device not in ("cpu", "cuda"):
            raise EngineError(f"device must be 'cpu' or 'cuda', got {device!r}")
        if device == "cuda" and not torch.cuda.is_available():
            raise EngineError("device 'cuda' requested but no CUDA device is available to torch")
        if dtype not in DTYPES:
            raise EngineError(f"dtype must be one of {list(DTYPES)}, got {dtype!r}")
        self._setup(RoboVLM.from_pretrained(checkpoint, device=torch.device(device)), dtype)

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


def build_engine(
    name: str,
    checkpoint: str | Path,
    *,
    device: str = "cpu",
    dtype: str = "float32",
    tensorrt: bool = False,
    trt_cache_dir: str | None = None,
    warm_up: bool = True,
) -> EngineBase:
    """The engine ``name`` on ``checkpoint``; ``warm_up`` runs one blank step first (see ``EngineBase.warm_up``).

    ``dtype`` is the torch engine's; an ONNX export has its precision fixed at export (``--dtype``), so another
    ``dtype`` with ``onnxruntime`` is an error rather than a setting that does nothing. ``tensorrt`` and
    ``trt_cache_dir`` are the ONNX Runtime engine's."""
    if name not in ENGINES:
        raise EngineError(f"engine {name!r} is not available: choose one of {list(ENGINES)}")
    if name == "torch":
        if tensorrt:
            raise EngineError("TensorRT runs ONNX graphs: use engine 'onnxruntime' with onnx_tensorrt")
        engine: EngineBase = TorchEngine(checkpoint, device=device, dtype=dtype)
    else:
        if dtype != "float32":
            raise EngineError(
                f"dtype {dtype!r} applies to the torch engine; the ONNX graphs' precision is chosen "
                "when exporting (robovlm export --dtype fp16)"
            )
        from .onnx_engine import OnnxEngine

        engine = OnnxEngine(checkpoint, device=device, tensorrt=tensorrt, trt_cache_dir=trt_cache_dir)
    if warm_up:
        engine.warm_up()
    return engine
