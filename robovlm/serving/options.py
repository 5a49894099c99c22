"""``robovlm serve``'s options (``ServeOptions``), checked where they are made: by the command line, or by
``deployment.app_builder`` from a ``serve build`` config's ``args`` (KubeRay). The one place their defaults are
written."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..configs.model import ConfigError, load_config
from ..errors import UserError
from ..runtime.wire import MAX_REQUEST_BYTES, WireError, read_token
from .ingress import INGRESSES
from .stepper_factory import STEPPERS


class ServeError(UserError, ValueError):
    """A ``robovlm serve`` option that cannot work; the message names it."""


APP_ARGS = (  # ServeOptions.app_args's keys: what the application needs, not where the server listens
    "checkpoint",
    "token_file",
    "engine",
    "device",
    "replicas",
    "gpus_per_replica",
    "cpus_per_replica",
    "max_batch_size",
    "batch_wait_ms",
    "max_request_bytes",
    "cache_mb",
)


@dataclass
class ServeOptions:
    checkpoint: str
    """Checkpoint directory (with ``onnx/`` for engine onnxruntime)."""
    token_file: str
    """File holding the bearer token robots must send (mode 600)."""
    host: str = "127.0.0.1"
    """Address the HTTP proxy listens on (0.0.0.0 to serve other machines)."""
    port: int = 8000
    address: str | None = None
    """An existing Ray cluster (``ray://...`` or ``HOST:PORT``); None starts a local Ray for this server."""
    engine: str = "torch"
    device: str = "cpu"
    replicas: int = 1
    gpus_per_replica: float = 0.0
    cpus_per_replica: float = 1.0
    """Ray's CPUs for each replica, also its torch threads."""
    max_batch_size: int = 8
    """Steps of different robots grouped into one engine call (1: no batching)."""
    batch_wait_ms: float = 0.0
    """How long a batch that is not full waits to fill (0: it takes what queued while the engine was busy)."""
    max_request_mb: float = MAX_REQUEST_BYTES / 2**20
    cache_mb: float = 256.0
    """Each replica's instruction cache (keys and values), least recently used out."""
    tls_cert: str | None = None
    tls_key: str | None = None
    ingress: str = "proxy"
    """What receives the robots' requests (``ingress.INGRESSES``): Ray Serve's proxy, or its HAProxy ingress
    (about 10 ms less per raw step on two cores; only for a Ray this server starts)."""

    def __post_init__(self) -> None:
        if self.engine not in STEPPERS:
            raise ServeError(f"--engine must be one of {list(STEPPERS)}, got {self.engine!r}")
        if self.device not in ("cpu", "cuda"):
            raise ServeError(f"--device must be cpu or cuda, got {self.device!r}")
        if not 0 < self.port < 65536:
            raise ServeError(f"--port must be 1-65535, got {self.port}")
        for name in ("replicas", "max_batch_size"):
            if getattr(self, name) < 1:
                raise ServeError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        for name in ("gpus_per_replica", "batch_wait_ms", "cache_mb"):
            if getattr(self, name) < 0:
                raise ServeError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if self.cpus_per_replica <= 0 or self.max_request_mb <= 0:
            raise ServeError("--cpus-per-replica and --max-request-mb must be positive")
        if self.gpus_per_replica and self.device == "cpu":
            self.device = "cuda"
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ServeError("TLS needs both --tls-cert and --tls-key")
        if self.ingress not in INGRESSES:
            raise ServeError(f"--ingress must be one of {list(INGRESSES)}, got {self.ingress!r}")
        if self.ingress == "haproxy" and self.address is not None:
            raise ServeError(
                "--ingress haproxy is for a Ray this server starts; a cluster joined with --address keeps its own "
                "ingress (start its nodes with RAY_SERVE_ENABLE_HA_PROXY=1 for HAProxy)"
            )
        if self.ingress == "haproxy" and self.tls_cert:
            raise ServeError("--tls-cert is served by Ray's proxy: use --ingress proxy, or end TLS in front of HAProxy")

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"{'https' if self.tls_cert else 'http'}://{host}:{self.port}"

    @classmethod
    def from_app_args(cls, args: dict[str, Any]) -> ServeOptions:
        """The options in ``app_args``'s form (a ``serve build`` config's ``args``, which KubeRay hands to
        ``deployment.app_builder``): missing ones take their defaults, unknown ones are refused by name."""
        args = dict(args)
        unknown = sorted(set(args) - set(APP_ARGS))
        if unknown:
            raise ServeError(f"unknown application args {unknown}; known: {list(APP_ARGS)}")
        if "max_request_bytes" in args:
            args["max_request_mb"] = int(args.pop("max_request_bytes")) / 2**20
        try:
            return cls(**args)
        except TypeError as exc:  # checkpoint or token_file missing
            raise ServeError(f"application args: {exc}") from exc

    def app_args(self) -> dict[str, Any]:
        """``deployment.app_builder``'s args (``from_app_args`` reads them back)."""
        return {
            "checkpoint": str(Path(self.checkpoint).resolve()),
            "token_file": str(Path(self.token_file).resolve()),
            "engine": self.engine,
            "device": self.device,
            "replicas": self.replicas,
            "gpus_per_replica": self.gpus_per_replica,
            "cpus_per_replica": self.cpus_per_replica,
            "max_batch_size": self.max_batch_size,
            "batch_wait_ms": self.batch_wait_ms,
            "max_request_bytes": int(self.max_request_mb * 2**20),
            "cache_mb": self.cache_mb,
        }

    def http_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"host": self.host, "port": self.port}
        if self.tls_cert:
            options.update(ssl_certfile=self.tls_cert, ssl_keyfile=self.tls_key)
        return options

    def check(self) -> None:
        """What can be checked before Ray starts: the token file and the checkpoint's config."""
        try:
            read_token(self.token_file)
        except WireError as exc:
            raise ServeError(f"--token-file: {exc}") from exc
        ckpt = Path(self.checkpoint)
        if not (ckpt / "config.json").is_file():
            raise ServeError(f"{ckpt}: not a checkpoint directory (no config.json)")
        if self.engine == "onnxruntime" and not (ckpt / "onnx" / "manifest.json").is_file():
            raise ServeError(f"{ckpt}: no ONNX export for --engine onnxruntime (robovlm export {ckpt} --out DIR)")
        try:
            load_config(ckpt)
        except ConfigError as exc:
            raise ServeError(f"{ckpt}: {exc}") from exc
