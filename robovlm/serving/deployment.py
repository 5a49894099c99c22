"""The Ray Serve deployment behind ``robovlm serve``: HTTP routes, the bearer token, size limits and batching.

Routes (``http://HOST:PORT``):
- ``GET /healthz``: 200 ``{"status": "ok", "model": ID}`` when the replica's model is loaded (no token: load
  balancers and Kubernetes probes call it; it tells nothing about the model but its id);
- ``GET /v1/info`` (token): the model's config and statistics, which the robot's ``RemoteEngine`` reads once;
- ``POST /v1/step`` (token): one ``StepRequest`` -> one ``StepReply`` (``robovlm.runtime.wire``).

Every request is checked before it costs anything: the token (401), the size from ``Content-Length`` and then
from what is actually read (413), the message against the served model (400); a step the model cannot run gets 422.
None of these disturbs another robot's step or the replica. The engine runs in its own thread; the steps that arrive
while it computes go together into its next call (``batcher.MicroBatcher``: ``max_batch_size``, ``batch_wait_ms``).
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..runtime.engine import limit_threads
from ..runtime.wire import (
    CONTENT_TYPE,
    StepReply,
    StepRequest,
    WireError,
    encode_info,
    read_token,
    token_digest,
)
from .batcher import MicroBatcher
from .stepper_factory import build_stepper

log = logging.getLogger("robovlm.serve")
APP_NAME = "robovlm"


def _error(status: int, message: str) -> Response:
    return Response(message + "\n", status_code=status, media_type="text/plain")


@serve.deployment(name="RoboVLMPolicy", max_ongoing_requests=64, health_check_period_s=2, health_check_timeout_s=30)
class PolicyDeployment:
    def __init__(
        self,
        checkpoint: str,
        *,
        token_file: str,
        engine: str,
        device: str,
        threads: int,
        max_batch_size: int,
        batch_wait_ms: float,
        max_request_bytes: int,
        cache_mb: float,
    ) -> None:
        """The token file is read here, on the replica's machine (a Kubernetes secret mounted as a file), so the
        token never travels through Ray; only its digest is kept."""
        self._token = token_digest(read_token(token_file))
        limit_threads(threads)
        # One thread loads the model and computes every batch, and no other thread of the replica runs torch:
        # libgomp keeps a pool of workers per thread that ever ran a parallel region, and once the pools hold more
        # threads than there are cores it stops spinning between regions (its throttled spin), which halved the
        # speed of the many small regions of a step (kosmos2_small: 120 ms against 56 ms in one thread).
        self._compute = ThreadPoolExecutor(1, "robovlm-step", initializer=torch.set_num_threads, initargs=(threads,))
        self._stepper = self._compute.submit(
            build_stepper, engine, checkpoint, device=device, cache_bytes=int(cache_mb * 2**20)
        ).result()
        self._compute.submit(self._stepper.warm_up).result()
        self._shape = self._stepper.shape(self._stepper.width)
        self._max_bytes = max_request_bytes
        self._batcher: MicroBatcher[StepRequest, StepReply | Exception] = MicroBatcher(
            self._stepper.step_batch, executor=self._compute, max_batch_size=max_batch_size, wait_s=batch_wait_ms / 1e3
        )
        context = serve.get_replica_context()
        self._replica = f"{context.replica_tag}@{os.uname().nodename}:{os.getpid()}"
        self._info = encode_info(
            {
                "model": self._stepper.model_id,
                "config": self._stepper.config.to_dict(),
                "stats": _stats_dict(self._stepper),
                "width": self._stepper.width,
                "device": self._stepper.device_name,
                "engine": engine,
                "max_request_bytes": max_request_bytes,
                "max_batch_size": max_batch_size,
                "replica": self._replica,
            }
        )
        log.info("replica %s serving %s on %s", self._replica, checkpoint, self._stepper.device_name)

    def check_health(self) -> None:
        """Ray Serve's replica health check: a replica whose model is gone is replaced."""
        if self._stepper is None:
            raise RuntimeError("the model is not loaded")

    async def __call__(self, request: Request) -> Response:
        t0 = time.perf_counter()
        path, method = request.url.path.rstrip("/") or "/", request.method
        if path == "/healthz" and method == "GET":
            return JSONResponse({"status": "ok", "model": self._stepper.model_id})
        if path not in ("/v1/info", "/v1/step"):
            return _error(404, f"no route {method} {path}: GET /healthz, GET /v1/info, POST /v1/step")
        if not self._authorized(request):
            return _error(401, "missing or wrong bearer token (Authorization: Bearer <token from the token file>)")
        if path == "/v1/info":
            return Response(self._info, media_type=CONTENT_TYPE) if method == "GET" else _error(405, "GET /v1/info")
        if method != "POST":
            return _error(405, "POST /v1/step")
        body = await self._read_body(request)
        if isinstance(body, Response):
            return body
        t_read = time.perf_counter()
        try:
            step = StepRequest.decode(body, self._shape, max_bytes=self._max_bytes)
        except WireError as exc:
            return _error(400, f"bad step request: {exc}")
        t_decoded = time.perf_counter()
        result = await self._batcher.submit(step)
        if isinstance(result, Exception):
            status = 422 if isinstance(result, (ValueError, LookupError)) else 500
            return _error(status, f"step failed: {type(result).__name__}: {result}")
        t_end = time.perf_counter()
        result.timing.update(
            server_ms=(t_end - t0) * 1e3,
            read_ms=(t_read - t0) * 1e3,
            decode_ms=(t_decoded - t_read) * 1e3,
            queue_ms=(result.timing.pop("started") - t_decoded) * 1e3,
            replica=self._replica,
        )
        return Response(result.encode(), media_type=CONTENT_TYPE)

    def _authorized(self, request: Request) -> bool:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token_digest(token.strip()), self._token)

    async def _read_body(self, request: Request) -> bytes | Response:
        """The body, at most ``max_request_bytes``: refused from its declared length before reading, and cut off
        while reading when the declaration lied or was missing (chunked)."""
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                return _error(400, "Content-Length is not a number")
            if int(declared) > self._max_bytes:
                return _error(413, f"request of {declared} bytes, the limit is {self._max_bytes}")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self._max_bytes:
                return _error(413, f"request over the limit of {self._max_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)


def _stats_dict(stepper: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return json.loads(json.dumps(asdict(stepper.stats)))


def app_builder(args: dict[str, Any]) -> serve.Application:
    """The application from ``serve build``-style args (``robovlm serve --write-config`` writes them; KubeRay's
    ``RayService`` passes them here), read and checked as ``ServeOptions`` (``options.APP_ARGS``), whose defaults
    fill what a hand-written config leaves out."""
    from .options import ServeOptions

    options = ServeOptions.from_app_args(args)
    deployment = PolicyDeployment.options(  # type: ignore[attr-defined]  # added by serve.deployment
        num_replicas=options.replicas,
        ray_actor_options={"num_cpus": options.cpus_per_replica, "num_gpus": options.gpus_per_replica},
    )
    return deployment.bind(
        options.checkpoint,
        token_file=options.token_file,
        engine=options.engine,
        device=options.device,
        threads=max(1, int(options.cpus_per_replica)),
        max_batch_size=options.max_batch_size,
        batch_wait_ms=options.batch_wait_ms,
        max_request_bytes=int(options.max_request_mb * 2**20),
        cache_mb=options.cache_mb,
    )
