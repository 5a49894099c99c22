"""The inference engines' interface: camera frames and joint state in, an action chunk in physical units out.

One engine per file: ``TorchEngine`` (``torch_engine.py``) runs ``RoboVLM.step`` (streaming: only the new frame is
encoded); ``OnnxEngine`` (``onnx_engine.py``) runs the graphs of ``robovlm export`` with the same semantics;
``factory.build_engine`` makes either by name. The node and the simulator evaluation use the same engines, so what is
tested offline is what drives the robot.
"""

from __future__ import annotations

import logging
import os
import platform

import numpy as np
import torch

from ..configs.model import RoboVLMConfig
from ..data.stats import NormStats

log = logging.getLogger(__name__)

ENGINES = ("torch", "onnxruntime", "remote")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class EngineError(RuntimeError):
    """The engine cannot be built on this machine (device, files); the message says what to change."""


class EngineUnavailable(RuntimeError):
    """The engine is alive but cannot answer now (``RemoteEngine``: the server is unreachable, slow or restarting).
    The robot is held until a step succeeds again; ``retry_after_s`` is when the engine will try again, so the caller
    waits instead of spinning. Not an ``EngineError``: rebuilding the engine would not bring the server back."""

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class EngineBase:
    """What the node needs to know about any engine, derived from its model config."""

    config: RoboVLMConfig
    stats: NormStats
    name: str
    """The engine in words (diagnostics): ``torch``, ``onnxruntime``, ``torch (process)``, ..."""
    device_name: str
    """The device that runs the model, in words (diagnostics' hardware_id)."""

    def step(
        self, head_rgb: np.ndarray, hand_rgb: np.ndarray | None, state: np.ndarray | None, instruction: str
    ) -> np.ndarray:
        """RGB uint8 (H, W, 3) frames, raw joint state (S,) -> (n, A) actions in physical units."""
        raise NotImplementedError

    def reset(self) -> None:
        """Forget the stream (window of features, instruction cache): the next step starts a new episode."""
        raise NotImplementedError

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
