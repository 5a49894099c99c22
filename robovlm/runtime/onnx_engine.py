"""ONNX Runtime engine: the four graphs of ``robovlm export`` behind the same interface as ``TorchEngine``.

Same streaming semantics as ``RoboVLM.step``: a new instruction runs the ``instruction`` graph once and clears the
window; every step encodes only the new frame (``vision``), runs the language model on the frame's tokens over the
cached instruction (``frame``) and the window head on the features so far (``window``).

IO binding: the instruction's keys and values, its hidden states and mask stay on the execution device as
``OrtValue``s between steps, and the vision tokens go from the ``vision`` graph to the ``frame`` graph without
leaving it; only the frame's feature (D floats) and the chunk come back to the host.

Providers follow ``device``: ``cpu`` -> CPU; ``cuda`` -> CUDA (TensorRT first when ``tensorrt``). A provider that
is not available is an ``EngineError`` naming what is missing, never a silent fallback to the CPU.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from ..configs.model import ConfigError, RoboVLMConfig
from ..data.stats import NormStats, StatsError
from ..model.policy import MissingInputError, prompt_ids
from ..model.tokenizer import checkpoint_tokenizer
from ..utils.images import to_pixels
from .engine import EngineBase, EngineError, cpu_name
from .shared_weights import map_weights, shared_initializers

log = logging.getLogger(__name__)

ONNX_DIR = "onnx"
GRAPHS = ("vision", "instruction", "frame", "window")
_ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}
Provider = str | tuple[str, dict[str, Any]]
"""An execution provider by name, or with its options."""


def providers_for(device: str, *, tensorrt: bool, cache_dir: str | None, fp16: bool) -> list[Provider]:
    """Execution providers for ``device``; raises ``EngineError`` when this onnxruntime build lacks one."""
    available = ort.get_available_providers()
    if device == "cpu":
        if tensorrt:
            raise EngineError("onnx_tensorrt needs device 'cuda' (TensorRT runs on the GPU)")
        return ["CPUExecutionProvider"]
    if device != "cuda":
        raise EngineError(f"device must be 'cpu' or 'cuda', got {device!r}")
    if "CUDAExecutionProvider" not in available:
        raise EngineError(
            f"device 'cuda' needs onnxruntime's CUDA execution provider; this onnxruntime "
            f"{ort.__version__} offers {available} (install the gpu extra: pip install "
            "'robovlm[gpu]', which brings onnxruntime-gpu, and the CUDA 12 runtime)"
        )
    providers: list[Provider] = [("CUDAExecutionProvider", {"device_id": 0})]
    if tensorrt:
        if "TensorrtExecutionProvider" not in available:
            raise EngineError(
                f"onnx_tensorrt needs onnxruntime's TensorRT execution provider; this onnxruntime "
                f"{ort.__version__} offers {available} (onnxruntime-gpu with TensorRT 10 libraries)"
            )
        options: dict[str, int | bool | str] = {
            "device_id": 0,
            "trt_fp16_enable": fp16,
            "trt_engine_cache_enable": cache_dir is not None,
        }
        if cache_dir is not None:
            Path(cache_dir).mkdir(parents=True, exist_ok=True)
            options["trt_engine_cache_path"] = str(cache_dir)
        providers.insert(0, ("TensorrtExecutionProvider", options))
    return providers


def session_options(
    threads: int, *, fp16_on_cpu: bool = False, shared: dict[str, ort.OrtValue] | None = None
) -> ort.SessionOptions:
    """One session's options: ``threads`` intra-op threads, sequential execution.

    ``shared``: initializers the session reads from memory shared with the other sessions (``shared_weights``),
    with prepacking off: the CPU provider otherwise re-lays every MatMul weight out into a buffer of its own, one
    per session (measured: shared weights with prepacking take more memory than a file per graph).

    ``fp16_on_cpu``: onnxruntime 1.32's CPU provider crashes (SIGSEGV in session creation) on fp16 graphs with
    attention when every optimisation is on (measured on the frame and window graphs with fusion modules); the
    extended level, without the CPU layout transformations, loads them. And the CPU kernels compute in fp32: ONNX
    Runtime casts every fp16 weight at every step (the graphs keep their fp16 initializers and run a Cast node per
    weight), and its arena with planned memory patterns keeps the fp32 copies of a whole graph allocated, per
    session (Kosmos-2 at full size: 20 GiB for 3.3 GiB of fp16 weights); without the arena each cast is freed when
    its MatMul is done (kosmos2_small: 115 MB above the process against 187 MB with it, same actions, same time).
    The default execution order still runs the weight Casts, which wait on nothing, well before their MatMuls, so
    many fp32 copies are alive at once (Kosmos-2 at full size: 2.09x the fp16 weights); the priority-based order
    runs each just before its consumer (Kosmos-2 with 4 of its 24 layers: 1.03x against 1.73x, the same actions, the
    same step time; fp32 graphs: no difference). fp16 is meant for the GPU providers."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    if fp16_on_cpu:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        opts.enable_cpu_mem_arena = False
        opts.enable_mem_pattern = False
        opts.execution_order = ort.ExecutionOrder.PRIORITY_BASED
    if shared:
        opts.add_session_config_entry("session.disable_prepacking", "1")
        for name, value in shared.items():
            opts.add_initializer(name, value)
    return opts


def check_parity_report(onnx_dir: Path) -> dict[str, Any]:
    """The export's parity report, or ``EngineError``: an export without one never finished its check."""
    path = onnx_dir / "parity.json"
    try:
        report: dict[str, Any] = json.loads(path.read_text())
        float(report["end_to_end_max_abs_diff_physical"])
    except FileNotFoundError:
        raise EngineError(
            f"{onnx_dir}: the ONNX export is incomplete (no parity.json: it was interrupted before "
            "its parity check); export again with `robovlm export`"
        ) from None
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise EngineError(f"{path}: unreadable parity report ({type(exc).__name__}: {exc}); export again") from exc
    return report


class OnnxEngine(EngineBase):
    def __init__(
        self,
        checkpoint: str | Path,
        *,
        device: str = "cpu",
        tensorrt: bool = False,
        trt_cache_dir: str | None = None,
        threads: int | None = None,
        require_parity: bool = True,
        share_weights: bool = True,
    ) -> None:
        """``require_parity``: refuse an export without its parity report (an export that was interrupted before
        its check; only the exporter's own parity run passes False). ``share_weights``: on the CPU, the sessions
        read one mapping of ``weights.onnx.data`` (False: each session loads its own, for measuring the
        difference)."""
        path = Path(checkpoint)
        onnx_dir = path / ONNX_DIR
        if not (onnx_dir / "manifest.json").is_file():
            raise EngineError(
                f"{path} has no ONNX export ({onnx_dir / 'manifest.json'} is missing); write one with "
                f"`robovlm export {path} --out DIR` and point model_path at DIR"
            )
        if require_parity:
            check_parity_report(onnx_dir)
        try:
            manifest = json.loads((onnx_dir / "manifest.json").read_text())
            if not isinstance(manifest, dict) or not all(name in manifest.get("graphs", {}) for name in GRAPHS):
                raise KeyError(f"graphs {list(GRAPHS)}")
            doc = json.loads((path / "config.json").read_text())
            self.config = RoboVLMConfig.from_dict(doc["model"])
            self.stats = NormStats.load(path / "stats.json")
        except (OSError, KeyError, json.JSONDecodeError, ConfigError, StatsError) as exc:
            raise EngineError(f"{path}: cannot read the checkpoint's config, stats or ONNX manifest: {exc}") from exc
        self.tokenizer = checkpoint_tokenizer(self.config.backbone.tokenizer, self.config.backbone.path, path)
        self.window_size = int(manifest["window_size"])
        self.dtype = manifest["dtype"]
        if device == "cpu" and self.dtype == "fp16" and require_parity:  # not the exporter's check, CPU on purpose
            log.warning(
                "%s: an fp16 export on ONNX Runtime's CPU provider costs memory and saves nothing: the CPU kernels "
                "compute in fp32 and the fp16 weights are cast on every step (measured on kosmos2_small: 197 MB "
                "against 129 MB for the fp32 export, the same step time); export with --dtype fp32 (or --quantize "
                "int8|int4) for the CPU, fp16 for a GPU provider",
                path,
            )
        providers = providers_for(device, tensorrt=tensorrt, cache_dir=trt_cache_dir, fp16=self.dtype == "fp16")
        threads = threads or torch.get_num_threads()
        # One mapping of the shared weights file for every session, kept as long as the sessions (CPU only: a GPU
        # provider copies initializers to the device per session either way).
        self._weights = map_weights(onnx_dir) if device == "cpu" and share_weights else None
        self._shared: dict[str, dict[str, ort.OrtValue]] = {}
        self.sessions = {}
        for name in GRAPHS:
            file = onnx_dir / manifest["graphs"][name]["file"]
            if not file.is_file():
                raise EngineError(f"{path}: the ONNX export is incomplete, {file} is missing")
            try:
                self._shared[name] = shared_initializers(file, self._weights)
                opts = session_options(
                    threads, fp16_on_cpu=device == "cpu" and self.dtype == "fp16", shared=self._shared[name]
                )
                session = ort.InferenceSession(str(file), sess_options=opts, providers=providers)
            except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
                raise EngineError(f"{file}: onnxruntime cannot load it: {exc}") from exc
            wanted = providers[0][0] if isinstance(providers[0], tuple) else providers[0]
            if session.get_providers()[0] != wanted:
                raise EngineError(f"{file}: onnxruntime fell back to {session.get_providers()} instead of {wanted}")
            self.sessions[name] = session
        self.inputs = {n: {i.name: i for i in s.get_inputs()} for n, s in self.sessions.items()}
        self.float_type = _ORT_TYPES[self.inputs["vision"]["pixels"].type]
        self.ort_device = "cuda" if device == "cuda" else "cpu"
        self.name = "onnxruntime" + ("+tensorrt" if tensorrt else "")
        self.device_name = _device_name(device, threads)
        self.reset()

    # ----------------------------------------------------------------------------------------------- streaming
    def reset(self) -> None:
        self._window: deque[np.ndarray] = deque(maxlen=self.window_size)
        self._prefix: dict[str, Any] | None = None  # the instruction's cache on the device

    def _ortvalue(self, array: np.ndarray) -> ort.OrtValue:
        return ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array), self.ort_device, 0)

    def _encode_instruction(self, instruction: str) -> None:
        ids = np.asarray([prompt_ids(self.tokenizer, self.config.backbone, instruction)], dtype=np.int64)
        mask = np.ones_like(ids)
        binding = self.sessions["instruction"].io_binding()
        binding.bind_ortvalue_input("ids", self._ortvalue(ids))
        mask_value = self._ortvalue(mask)
        binding.bind_ortvalue_input("mask", mask_value)
        for out in ("hidden", "past"):
            binding.bind_output(out, self.ort_device)
        self.sessions["instruction"].run_with_iobinding(binding)
        hidden, past = binding.get_outputs()
        self._window.clear()
        self._prefix = {"instruction": instruction, "mask": mask_value, "hidden": hidden, "past": past}

    def _pixels(self, rgb: np.ndarray) -> np.ndarray:
        cfg = self.config
        return to_pixels(rgb, size=cfg.image_size, mean=cfg.image_mean, std=cfg.image_std).numpy()  # (1, 3, S, S)

    def step(
        self, head_rgb: np.ndarray, hand_rgb: np.ndarray | None, state: np.ndarray | None, instruction: str
    ) -> np.ndarray:
        """RGB uint8 (H, W, 3) frames, raw joint state (S,) -> (n, A) actions in physical units."""
        cfg = self.config
        if self._prefix is None or self._prefix["instruction"] != instruction:
            self._encode_instruction(instruction)
        p = self._prefix
        assert p is not None  # set by _encode_instruction
        hand_ok = hand_rgb is not None and cfg.use_hand_rgb
        if cfg.use_hand_rgb and not hand_ok and cfg.missing_hand == "error":
            raise MissingInputError("a frame has no hand-camera image and missing_hand is 'error'")
        if cfg.use_state and state is None:
            raise ValueError("the model uses the joint state but none was given")
        images = [self._pixels(head_rgb)] + ([self._pixels(hand_rgb)] if hand_rgb is not None and hand_ok else [])
        pixels = np.concatenate(images).astype(self.float_type)  # (C', 3, S, S)
        camera = np.arange(len(images), dtype=np.int64)
        vision = self.sessions["vision"].io_binding()
        vision.bind_ortvalue_input("pixels", self._ortvalue(pixels))
        vision.bind_ortvalue_input("camera", self._ortvalue(camera))
        vision.bind_output("tokens", self.ort_device)
        self.sessions["vision"].run_with_iobinding(vision)
        tokens = vision.get_outputs()[0]  # (C', Nt, D) on the device
        if cfg.use_hand_rgb and not hand_ok:  # the hand rows are replaced by the marker: any values do
            head = tokens.numpy()
            tokens = self._ortvalue(np.concatenate([head, np.zeros_like(head)]))

        frame = self.sessions["frame"].io_binding()
        frame.bind_ortvalue_input("vision_tokens", tokens)
        if cfg.use_hand_rgb:
            frame.bind_ortvalue_input("hand_valid", self._ortvalue(np.asarray([hand_ok])))
        if cfg.use_state:
            st = self.stats.normalize_state(np.asarray(state, dtype=np.float32))[None].astype(self.float_type)
            frame.bind_ortvalue_input("state", self._ortvalue(st))
        frame.bind_ortvalue_input("past", p["past"])
        frame.bind_ortvalue_input("prefix_mask", p["mask"])
        if "prefix_hidden" in self.inputs["frame"]:
            frame.bind_ortvalue_input("prefix_hidden", p["hidden"])
        frame.bind_output("feature", "cpu")
        self.sessions["frame"].run_with_iobinding(frame)
        self._window.append(frame.get_outputs()[0].numpy()[0])  # (D,)

        t = len(self._window)
        feats = np.zeros((1, self.window_size, self._window[0].shape[0]), dtype=self.float_type)
        feats[0, :t] = np.stack(self._window)
        chunk = self.sessions["window"].run(["chunk"], {"feats": feats, "last": np.asarray([t - 1], np.int64)})[0]
        return self.stats.unnormalize_action(chunk[0].astype(np.float32))  # (n, A)


def _device_name(device: str, threads: int) -> str:
    if device == "cuda" and torch.cuda.is_available():
        return f"cuda:0 {torch.cuda.get_device_name(0)}"
    if device == "cuda":
        return "cuda:0 (onnxruntime CUDA execution provider)"
    return f"cpu {cpu_name()} ({threads} threads)"
