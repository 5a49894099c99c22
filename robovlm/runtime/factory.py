"""``build_engine``: the engine a node parameter or a command names, checked and warmed up. Each engine's module is
imported when it is built: a node on a GPU server (``remote``) or with its engine in a process of its own never loads
the model code (transformers: about 3 s of CPU at start)."""

from __future__ import annotations

from pathlib import Path

from .engine import ENGINES, EngineBase, EngineError


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
    if name == "remote":
        raise EngineError("engine 'remote' runs on a server: build_remote_engine(server_url, token_file=...)")
    if name == "torch":
        if tensorrt:
            raise EngineError("TensorRT runs ONNX graphs: use engine 'onnxruntime' with onnx_tensorrt")
        from .torch_engine import TorchEngine

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


def build_remote_engine(
    url: str, *, token_file: str, timeout_s: float = 1.0, jpeg_quality: int = 0, robot: str = ""
) -> EngineBase:
    """The ``remote`` engine: steps answered by ``robovlm serve`` at ``url`` (``remote_engine.RemoteEngine``). No
    warm-up here: each server replica warms its model up when it starts."""
    from .remote_engine import RemoteEngine

    return RemoteEngine(url, token_file=token_file, timeout_s=timeout_s, jpeg_quality=jpeg_quality, robot=robot)
