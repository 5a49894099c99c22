"""``python -m robovlm_node.tools.sim_node [--inference-latency-ms MS] [--latency-jitter-ms MS] --ros-args ...``:
the unchanged robovlm node with a slow model, for the simulator (``make demo LATENCY_MS=300``).

The engine the node loads is wrapped so each step takes at least the given latency (``robovlm.sim.latency.
SlowedEngine``): what a full-size model on a Jetson or a remote GPU adds. It is a separate entry point, not a node
parameter, so no robot's launch file can switch it on by mistake. The camera's latency is the sim bridge's
(``SimBridge(camera_latency_ms=...)``).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from robovlm.cli.common import milliseconds
from robovlm.sim.latency import LatencySettings, SlowedEngine

from .. import process


def split_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """This tool's own arguments, and the ROS ones (from ``--ros-args`` on) for the node."""
    if "--ros-args" in argv:
        i = argv.index("--ros-args")
        return argv[:i], argv[i:]
    return argv, []


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    own, ros = split_args(argv)
    p = argparse.ArgumentParser(prog="python -m robovlm_node.tools.sim_node", description=__doc__)
    p.add_argument("--inference-latency-ms", type=milliseconds, default=0.0, help="each model step takes at least this")
    p.add_argument("--latency-jitter-ms", type=milliseconds, default=0.0, help="plus a uniform [0, this] per step")
    p.add_argument("--seed", type=int, default=0, help="of the jitter")
    a = p.parse_args(own)
    settings = LatencySettings(inference_ms=a.inference_latency_ms, jitter_ms=a.latency_jitter_ms)
    rng = np.random.default_rng(a.seed)
    return process.main([sys.argv[0], *ros], engine_wrapper=lambda engine: SlowedEngine(engine, settings, rng=rng))


if __name__ == "__main__":
    raise SystemExit(main())
