"""``robovlm serve``'s work: check the options, start (or join) Ray, run the deployment, stop cleanly.

A local Ray is started for the server and stopped with it (SIGTERM or Ctrl-C: the application is deleted, Serve
and the Ray processes it started end, nothing is left behind). With ``address`` the server joins an existing cluster
and on exit removes only its application. ``write_config`` writes the same application as a ``serve build``-style
config, which a KubeRay ``RayService`` deploys (README, "Inference on a GPU server").
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..configs.model import ConfigError, load_config
from ..runtime.wire import MAX_REQUEST_BYTES, WireError, read_token
from .stepper_factory import STEPPERS

log = logging.getLogger("robovlm.serve")


class ServeError(ValueError):
    """A ``robovlm serve`` option that cannot work; the message names it."""


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
    max_batch_size: int = 8
    """Steps of different robots grouped into one engine call (1: no batching)."""
    batch_wait_ms: float = 0.0
    """How long a batch that is not full waits to fill (0: it takes what queued while the engine was busy)."""
    max_request_mb: float = MAX_REQUEST_BYTES / 2**20
    cache_mb: float = 256.0
    """Each replica's instruction cache (keys and values), least recently used out."""
    tls_cert: str | None = None
    tls_key: str | None = None

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

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"{'https' if self.tls_cert else 'http'}://{host}:{self.port}"

    def app_args(self) -> dict[str, Any]:
        """``deployment.app_builder``'s args."""
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


def write_config(options: ServeOptions, path: str | Path) -> None:
    """The application as a ``serve build`` config (``applications``, ``http_options``): what KubeRay's
    ``RayService`` takes as ``serveConfigV2``. Paths are as seen on the cluster's nodes: mount the checkpoint and
    the token (a Kubernetes secret) there."""
    import yaml

    doc = {
        "proxy_location": "EveryNode",
        "http_options": {"host": "0.0.0.0", "port": options.port},
        "applications": [
            {
                "name": "robovlm",
                "route_prefix": "/",
                "import_path": "robovlm.serving.deployment:app_builder",
                "args": options.app_args(),
            }
        ],
    }
    header = (
        "# Written by `robovlm serve --write-config`: a Ray Serve config in the format of `serve build`.\n"
        "# Run it on a cluster with `serve deploy FILE`, or put it under `serveConfigV2` of a KubeRay RayService.\n"
    )
    Path(path).write_text(header + yaml.safe_dump(doc, sort_keys=False))


def run_server(options: ServeOptions, stop: threading.Event, *, handle_signals: bool = True) -> None:
    """Serve until ``stop`` is set (``handle_signals``: also on SIGTERM and SIGINT); Serve and a Ray this call
    started are shut down before it returns."""
    import signal

    import ray
    from ray import serve

    from .deployment import APP_NAME, app_builder

    options.check()
    started_ray = options.address is None
    if started_ray:
        ray.init(
            address="local",
            include_dashboard=False,
            num_cpus=max(os.cpu_count() or 1, int(options.replicas * options.cpus_per_replica)),
            object_store_memory=256 * 2**20,  # steps travel over HTTP, not the object store
            log_to_driver=True,
            configure_logging=False,
        )
    else:
        ray.init(address=options.address, configure_logging=False)
    if handle_signals:  # after ray.init, whose own SIGTERM handler ends the process without shutting Ray down
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    try:
        serve.start(http_options=options.http_options())
        serve.run(app_builder(options.app_args()), name=APP_NAME, route_prefix="/", blocking=False)
        log.info(
            "serving %s (%s, %s, %d replica(s), batches of up to %d) at %s",
            options.checkpoint,
            options.engine,
            options.device,
            options.replicas,
            options.max_batch_size,
            options.url,
        )
        stop.wait()
        log.info("stopping")
    finally:
        try:
            if started_ray:
                serve.shutdown()
            else:
                serve.delete(APP_NAME)
        finally:
            ray.shutdown()
