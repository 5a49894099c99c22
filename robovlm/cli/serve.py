"""``robovlm serve``: the policy on Ray Serve for robots without a GPU (``engine:=remote`` in the node)."""

from __future__ import annotations

import argparse
import dataclasses
import threading

from .common import at_least


def _defaults() -> dict[str, object]:
    """``ServeOptions``'s defaults: the one place they are written."""
    from ..serving.options import ServeOptions

    return {f.name: f.default for f in dataclasses.fields(ServeOptions) if f.default is not dataclasses.MISSING}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``serve`` to the ``robovlm`` command line."""
    s = sub.add_parser(
        "serve",
        help="serve a checkpoint to robots over HTTP on Ray Serve (node: engine:=remote)",
        description="Serve CHECKPOINT on Ray Serve: GET /healthz, GET /v1/info and POST /v1/step on "
        "http://HOST:PORT. Steps of different robots are batched into one engine call. Stops on SIGTERM or Ctrl-C, "
        "with the local Ray it started. Needs the serve extra: pip install 'robovlm[serve]'.",
    )
    d = _defaults()
    s.add_argument("checkpoint", metavar="CHECKPOINT")
    s.add_argument("--token-file", required=True, metavar="FILE", help="bearer token robots must send (mode 600)")
    s.add_argument("--host", default=d["host"], help="listen address (0.0.0.0: other machines; default loopback)")
    s.add_argument("--port", type=int, default=d["port"])
    s.add_argument("--address", default=d["address"], help="join this Ray cluster instead of starting a local Ray")
    s.add_argument("--engine", choices=["torch", "onnxruntime"], default=d["engine"])
    s.add_argument("--device", choices=["cpu", "cuda"], default=d["device"])
    s.add_argument("--replicas", type=at_least(1), default=d["replicas"])
    s.add_argument("--gpus-per-replica", type=float, default=d["gpus_per_replica"])
    s.add_argument(
        "--cpus-per-replica", type=float, default=d["cpus_per_replica"], help="also the replica's torch threads"
    )
    s.add_argument("--max-batch-size", type=at_least(1), default=d["max_batch_size"], help="1 turns batching off")
    s.add_argument(
        "--batch-wait-ms",
        type=float,
        default=d["batch_wait_ms"],
        help="wait to fill a batch (0: take what queued while busy)",
    )
    s.add_argument("--max-request-mb", type=float, default=d["max_request_mb"], help="larger requests get 413")
    s.add_argument("--cache-mb", type=float, default=d["cache_mb"], help="each replica's instruction cache")
    s.add_argument("--tls-cert", default=d["tls_cert"], metavar="PEM", help="serve HTTPS with this certificate")
    s.add_argument("--tls-key", default=d["tls_key"], metavar="PEM")
    s.add_argument(
        "--ingress",
        choices=["proxy", "haproxy"],
        default=d["ingress"],
        help="Ray Serve's proxy, or its HAProxy ingress (faster; stats and metrics ports on every interface)",
    )
    s.add_argument(
        "--write-config", default=None, metavar="FILE", help="write a serve-build config (KubeRay RayService), exit"
    )
    s.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    from ..serving.options import ServeOptions
    from ..serving.server import run_server, write_config

    options = ServeOptions(
        checkpoint=args.checkpoint,
        token_file=args.token_file,
        host=args.host,
        port=args.port,
        address=args.address,
        engine=args.engine,
        device=args.device,
        replicas=args.replicas,
        gpus_per_replica=args.gpus_per_replica,
        cpus_per_replica=args.cpus_per_replica,
        max_batch_size=args.max_batch_size,
        batch_wait_ms=args.batch_wait_ms,
        max_request_mb=args.max_request_mb,
        cache_mb=args.cache_mb,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        ingress=args.ingress,
    )
    if args.write_config:
        write_config(options, args.write_config)
        print(f"wrote {args.write_config}: `serve deploy {args.write_config}`, or serveConfigV2 of a RayService")
        return 0
    run_server(options, threading.Event())
    return 0
