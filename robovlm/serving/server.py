"""``robovlm serve``'s work: check the options, start (or join) Ray, run the deployment, stop cleanly.

A local Ray is started for the server and stopped with it (SIGTERM or Ctrl-C: the application is deleted, Serve
and the Ray processes it started end, nothing is left behind). With ``address`` the server joins an existing cluster
and on exit removes only its application. ``write_config`` writes the same application as a ``serve build``-style
config, which a KubeRay ``RayService`` deploys (docs/serving.md).
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from .ingress import ingress_environment
from .options import ServeError, ServeOptions

log = logging.getLogger("robovlm.serve")


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
    if options.ingress == "haproxy":  # read by Ray's processes when they start, not by the application
        header += "# --ingress haproxy: give the cluster's Ray containers RAY_SERVE_ENABLE_HA_PROXY=1 in their env.\n"
    Path(path).write_text(header + yaml.safe_dump(doc, sort_keys=False))


def run_server(options: ServeOptions, stop: threading.Event, *, handle_signals: bool = True) -> None:
    """Serve until ``stop`` is set (``handle_signals``: also on SIGTERM and SIGINT); Serve and a Ray this call
    started are shut down before it returns, and the ingress's files (``ingress.ingress_environment``) removed."""
    options.check()
    with ingress_environment(options.ingress):
        if options.ingress == "haproxy":
            log.info(
                "ingress: Ray Serve's HAProxy, stats on port %s, Prometheus metrics on port %s (every interface)",
                os.environ["RAY_SERVE_HAPROXY_STATS_PORT"],
                os.environ["RAY_SERVE_HAPROXY_METRICS_PORT"],
            )
        _serve(options, stop, handle_signals=handle_signals)


def _serve(options: ServeOptions, stop: threading.Event, *, handle_signals: bool) -> None:
    import signal

    import ray
    from ray import serve

    from .deployment import APP_NAME, app_builder

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
        try:
            ray.init(address=options.address, configure_logging=False)
        except ConnectionError as exc:
            raise ServeError(
                f"--address {options.address}: cannot join the Ray cluster ({exc}). Is it running and reachable? "
                "A cluster started with `ray start` checks a token: start the server with RAY_AUTH_MODE=token and "
                "the cluster's token in RAY_AUTH_TOKEN or ~/.ray/auth_token"
            ) from exc
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
