"""``robovlm serve``: the policy on Ray Serve for robots without a GPU (``engine:=remote`` in the node)."""

from __future__ import annotations

import argparse
import threading

from .common import at_least


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``serve`` to the ``robovlm`` command line."""
    s = sub.add_parser(
        "serve",
        help="serve a checkpoint to robots over HTTP on Ray Serve (node: engine:=remote)",
        description="Serve CHECKPOINT on Ray Serve: GET /healthz, GET /v1/info and POST /v1/step on "
        "http://HOST:PORT. Steps of different robots are batched into one engine call. Stops on SIGTERM or Ctrl-C, "
        "with the local Ray it started. Needs the serve extra: pip install 'robovlm[serve]'.",
    )
    s.add_argument("checkpoint", metavar="CHECKPOINT")
    s.add_argument("--token-file", required=True, metavar="FILE", help="bearer token robots must send (mode 600)")
    s.add_argument("--host", default="127.0.0.1", help="listen address (0.0.0.0: other machines; default loopback)")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--address", default=None, help="join this Ray cluster instead of starting a local Ray")
    s.add_argument("--engine", choices=["torch", "onnxruntime"], default="torch")
    s.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    s.add_argument("--replicas", type=at_least(1), default=1)
    s.add_argument("--gpus-per-replica", type=float, default=0.0)
    s.add_argument("--cpus-per-replica", type=float, default=1.0, help="also the replica's torch threads")
    s.add_argument("--max-batch-size", type=at_least(1), default=8, help="1 turns batching off")
    s.add_argument(
        "--batch-wait-ms", type=float, default=0.0, help="wait to fill a batch (0: take what queued while busy)"
    )
    s.add_argument("--max-request-mb", type=float, default=4.0, help="larger requests get 413")
    s.add_argument("--cache-mb", type=float, default=256.0, help="each replica's instruction cache")
    s.add_argument("--tls-cert", default=None, metavar="PEM", help="serve HTTPS with this certificate")
    s.add_argument("--tls-key", default=None, metavar="PEM")
    s.add_argument(
        "--write-config", default=None, metavar="FILE", help="write a serve-build config (KubeRay RayService), exit"
    )
    s.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    from ..serving.server import ServeOptions, run_server, write_config

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
    )
    if args.write_config:
        write_config(options, args.write_config)
        print(f"wrote {args.write_config}: `serve deploy {args.write_config}`, or serveConfigV2 of a RayService")
        return 0
    run_server(options, threading.Event())
    return 0
