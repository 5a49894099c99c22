"""``build_stepper``: the server's engine by name (``robovlm serve --engine``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch only when a stepper is built: ``robovlm serve --help`` reads STEPPERS
    from .stepper import Stepper

STEPPERS = ("torch", "onnxruntime")


def build_stepper(
    engine: str, checkpoint: str | Path, *, device: str = "cpu", cache_bytes: int = 256 * 2**20
) -> Stepper:
    """The stepper ``engine`` (torch | onnxruntime) on ``checkpoint``."""
    if engine == "torch":
        from .stepper import TorchStepper

        return TorchStepper(checkpoint, device=device, cache_bytes=cache_bytes)
    if engine == "onnxruntime":
        from .onnx_stepper import OnnxStepper

        return OnnxStepper(checkpoint, device=device, cache_bytes=cache_bytes)
    from ..runtime.engine import EngineError

    raise EngineError(f"engine {engine!r}: choose one of {list(STEPPERS)}")
