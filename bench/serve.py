"""``make bench-serve``: robots sharing one model server, against each running the model itself.

N = 1, 2, 4, 8 simulated robots, each its own process: a camera thread "publishes" a head and a hand frame at 30 Hz
(320x240, cycled from a fixed set so the robots spend no CPU making them), and an inference loop that, as the node's,
steps on the newest frame as soon as the previous step is done. Three setups, one after another on the same
machine: each robot with its own local torch engine (its share of the cores), and one ``robovlm serve`` (one
replica, all the cores, torch) behind each ingress (Ray Serve's proxy, its HAProxy) with batching off
(``--max-batch-size 1``) and on (up to 8: the steps that queued while the engine was busy). Per setup and N:
per-robot step rate, aggregate rate, p50/p99 round trip (local: the step), mean batch size, bytes per step; then
the targets, and the remote actions' difference from the local engine with raw and JPEG frames.

Model: ``kosmos2_small`` (224 px, random weights). On this 2-core CPU everything shares the cores: the robots, Ray's
proxy and the replica; on a GPU server the robots would be other machines. Writes ``bench/results/serve.md``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from robovlm.runtime.engine import EngineUnavailable, cpu_name

RESULTS = Path("bench/results/serve.md")
NOTES = "<!-- notes below are written by hand and kept by make bench-serve -->"
CAMERA_HZ = 30.0
INSTRUCTION = "go around the box on the left and stop at the cup"


def _frames(seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (240, 320, 3), dtype=np.uint8) for _ in range(8)]


def robot(spec: dict[str, Any], start: Any, results: Any) -> None:
    """One robot: camera thread at 30 Hz, inference loop on the newest frame; reports its figures."""
    import threading

    from robovlm.runtime.engine import limit_threads
    from robovlm.runtime.factory import build_engine, build_remote_engine

    limit_threads(spec["threads"])
    if spec["url"]:
        engine = build_remote_engine(spec["url"], token_file=spec["token_file"], timeout_s=30.0)
    else:
        engine = build_engine("torch", spec["checkpoint"])
    frames = _frames(spec["seed"])
    state = np.zeros(engine.state_dim, np.float32) if engine.uses_state else None
    latest = [0]
    stop = threading.Event()

    def camera() -> None:
        while not stop.wait(1.0 / CAMERA_HZ):
            latest[0] += 1

    threading.Thread(target=camera, daemon=True).start()
    start.wait()
    t_end = time.monotonic() + spec["warm_s"] + spec["seconds"]
    t_measure = time.monotonic() + spec["warm_s"]
    rtt, batch, size, ingress = [], [], [], []
    steps, failures, last = 0, 0, -1
    while time.monotonic() < t_end:
        k = latest[0]
        if k == last:
            time.sleep(0.001)
            continue
        last = k
        head, hand = frames[k % 8], frames[(k + 3) % 8]
        t0 = time.perf_counter()
        try:
            engine.step(head, hand if engine.uses_hand else None, state, INSTRUCTION)
        except EngineUnavailable:
            failures += 1
            continue
        if time.monotonic() < t_measure:
            continue
        steps += 1
        timing = getattr(engine, "timing", None)
        rtt.append(timing.round_trip_ms if timing else (time.perf_counter() - t0) * 1e3)
        if timing:
            batch.append(timing.batch_size)
            size.append(timing.request_bytes)
            ingress.append(timing.network_ms + timing.read_ms)
    stop.set()
    results.put(
        {"steps": steps, "seconds": spec["seconds"], "rtt": rtt, "batch": batch, "bytes": size, "fail": failures}
        | {"ingress": ingress}
    )


def run_robots(n: int, *, checkpoint: str, url: str, token_file: str, seconds: float, threads: int) -> dict:
    ctx = mp.get_context("spawn")
    start, results = ctx.Event(), ctx.Queue()
    specs = [
        {"checkpoint": checkpoint, "url": url, "token_file": token_file, "seconds": seconds, "warm_s": 3.0}
        | {"threads": threads, "seed": i}
        for i in range(n)
    ]
    procs = [ctx.Process(target=robot, args=(s, start, results)) for s in specs]
    for p in procs:
        p.start()
    time.sleep(8.0 if not url else 3.0)  # engines loaded (local) or connected
    start.set()
    out = [results.get(timeout=seconds + 300) for _ in procs]
    for p in procs:
        p.join(30)
    rtt = [x for r in out for x in r["rtt"]]
    rates = [r["steps"] / r["seconds"] for r in out]
    return {
        "n": n,
        "per_robot_hz": statistics.mean(rates),
        "aggregate_hz": sum(rates),
        "p50": float(np.percentile(rtt, 50)) if rtt else float("nan"),
        "p99": float(np.percentile(rtt, 99)) if rtt else float("nan"),
        "batch": statistics.mean([x for r in out for x in r["batch"]]) if out[0]["batch"] else float("nan"),
        "bytes": statistics.mean([x for r in out for x in r["bytes"]]) if out[0]["bytes"] else float("nan"),
        "ingress": float(np.percentile([x for r in out for x in r["ingress"]], 50)) if out[0]["ingress"] else np.nan,
        "failures": sum(r["fail"] for r in out),
    }


def parity(checkpoint: Path, url: str, token_file: str) -> dict[str, float]:
    """Largest action difference from the local engine over 24 steps (instruction change, missing hand frames)."""
    from robovlm.export.exporter import streaming_inputs
    from robovlm.runtime.factory import build_engine, build_remote_engine

    out = {}
    for label, quality in (("raw", 0), ("jpeg 90", 90), ("jpeg 75", 75)):
        local = build_engine("torch", checkpoint)
        remote = build_remote_engine(url, token_file=token_file, timeout_s=30.0, jpeg_quality=quality)
        worst = 0.0
        for head, hand, state, instr in streaming_inputs(local.config, 24):
            worst = max(
                worst, float(np.abs(remote.step(head, hand, state, instr) - local.step(head, hand, state, instr)).max())
            )
        out[label] = (worst, remote.timing.request_bytes)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.serve", description=__doc__)
    p.add_argument("--robots", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--seconds", type=float, default=20.0, help="measured seconds per row (after 3 s of warm-up)")
    p.add_argument("--results", type=Path, default=RESULTS)
    p.add_argument(
        "--ingresses",
        nargs="+",
        choices=["proxy", "haproxy"],
        default=["proxy", "haproxy"],
        help="robovlm serve --ingress",
    )
    args = p.parse_args(argv)
    from bench.engines import _checkpoint
    from robovlm.serving.local_server import LocalServer

    cores = mp.cpu_count()
    t_start = time.monotonic()
    rows: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = _checkpoint("kosmos2_small", Path(tmp))
        for n in args.robots:
            r = run_robots(
                n, checkpoint=str(ckpt), url="", token_file="", seconds=args.seconds, threads=max(1, cores // n)
            )
            rows.setdefault("local", []).append(r)
            print(f"local engines, {n} robot(s): {r}", flush=True)
        for ingress in args.ingresses:
            for batch in ("1", "8"):
                label = f"server ({ingress}), batching {'on' if batch == '8' else 'off'}"
                serve_args = ("--cpus-per-replica", str(cores), "--max-batch-size", batch, "--ingress", ingress)
                workdir = Path(tmp) / f"{ingress}-{batch}"
                workdir.mkdir()
                with LocalServer(ckpt, workdir, args=serve_args) as server:
                    for n in args.robots:
                        r = run_robots(
                            n,
                            checkpoint=str(ckpt),
                            url=server.url,
                            token_file=str(server.token_file),
                            seconds=args.seconds,
                            threads=1,
                        )
                        rows.setdefault(label, []).append(r)
                        print(f"{label}, {n} robot(s): {r}", flush=True)
                    if batch == "8" and ingress == args.ingresses[0]:
                        diffs = parity(ckpt, server.url, str(server.token_file))
                        health = []
                        for _ in range(50):
                            t0 = time.perf_counter()
                            server.request("GET", "/healthz", token=None)
                            health.append((time.perf_counter() - t0) * 1e3)
    minutes = (time.monotonic() - t_start) / 60
    write_results(args.results, rows, diffs, statistics.median(health), cores, minutes)
    print(args.results.read_text())
    return 0


def write_results(path: Path, rows: dict, diffs: dict, health_ms: float, cores: int, minutes: float) -> None:
    lines = [
        "# Robots sharing a model server (issue 22)",
        "",
        f"Written by `make bench-serve` (`python -m bench.serve`) on {date.today()} ({minutes:.0f} minutes), "
        f"{cores} CPU cores ({cpu_name()}), no GPU. Model `kosmos2_small` (224 px, random weights); each robot "
        "a process with two 30 Hz cameras, stepping on the newest frame as the node does. Everything shares the "
        "cores: robots, the ingress and the one replica (torch, all cores). Ingress: `proxy` is Ray Serve's HTTP "
        "proxy, `haproxy` Ray Serve's HAProxy ingress (`robovlm serve --ingress`). *Round trip*: local rows the step "
        "itself; server rows request to reply, frames resized on the robot and sent raw. *Ingress*: what of the round "
        "trip the replica did not spend on the step once it had the request (the round trip less the replies' "
        "`server_ms`, plus their `read_ms`): the hops through the ingress and the body's way into the replica; it "
        "moves little with the load of the machine, where the rest does.",
        "",
        "| setup | robots | per-robot steps/s | aggregate steps/s | p50 ms | p99 ms | ingress p50 ms | mean batch | "
        "kB per step |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for label, rs in rows.items():
        for r in rs:
            kb = "" if np.isnan(r["bytes"]) else f"{r['bytes'] / 1e3:.0f}"
            batch = "" if np.isnan(r["batch"]) else f"{r['batch']:.2f}"
            ingress = "" if np.isnan(r["ingress"]) else f"{r['ingress']:.1f}"
            lines.append(
                f"| {label} | {r['n']} | {r['per_robot_hz']:.2f} | {r['aggregate_hz']:.2f} | {r['p50']:.0f} | "
                f"{r['p99']:.0f} | {ingress} | {batch} | {kb} |"
            )
    lines += ["", "Targets:"]
    for ingress in ("proxy", "haproxy"):
        on = {r["n"]: r for r in rows.get(f"server ({ingress}), batching on", [])}
        off = {r["n"]: r for r in rows.get(f"server ({ingress}), batching off", [])}
        if 8 in on and 8 in off:
            gain = on[8]["aggregate_hz"] / off[8]["aggregate_hz"]
            lines.append(
                f"- {ingress}: 8 robots, aggregate steps/s with batching / without: **{gain:.2f}x** "
                "(target at least 1.5x)"
            )
    local = {r["n"]: r for r in rows.get("local", [])}
    for ingress in ("proxy", "haproxy"):
        on = {r["n"]: r for r in rows.get(f"server ({ingress}), batching on", [])}
        if 1 in on and 1 in local:
            lines.append(
                f"- {ingress}: 1 robot, round trip over the local step (p50): **+{on[1]['p50'] - local[1]['p50']:.0f} "
                f"ms** (target at most 10 ms), of which the ingress {on[1]['ingress']:.1f} ms; the rest is the replica "
                "computing beside the robot and Ray on the same cores"
            )
    lines.append(f"- an empty `GET /healthz` through the first ingress takes {health_ms:.1f} ms")
    lines += ["", "Remote actions against the local engine (24 steps, instruction change, missing hand frames):", ""]
    lines += ["| frames | largest action difference | bytes per step |", "| --- | --- | --- |"]
    for label, (diff, nbytes) in diffs.items():
        lines.append(f"| {label} | {diff:.2g} | {nbytes / 1e3:.0f} kB |")
    notes = ""
    if path.is_file() and NOTES in path.read_text():  # the commentary written by hand below the tables stays
        notes = path.read_text().split(NOTES, 1)[1]
    path.write_text("\n".join(lines) + "\n\n" + NOTES + notes)


if __name__ == "__main__":
    sys.exit(main())
