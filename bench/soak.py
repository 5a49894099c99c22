"""``make soak``: the node as it runs on a robot, for minutes, optionally beside CPU-bound jobs.

Starts ``robovlm_node`` as its own process (``autostart``, the demo checkpoint, the installed defaults), publishes two
640x480 rgb8 cameras at 30 Hz (stamped now) and joint states at 50 Hz from this process, optionally runs ``--load``
CPU-bound processes beside it, samples the resident memory of the node and its engine process once a second, and
prints: commands and rate, the longest gap between commands, the fraction of control ticks stopped by cause (from
the node's own counters, warm-up excluded), inference latency p50/p99 and RSS start/end/max.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 200))

import rclpy  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from geometry_msgs.msg import Twist  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import Image, JointState  # noqa: E402
from std_msgs.msg import Header  # noqa: E402
from tqdm import tqdm  # noqa: E402

from robovlm.data.stats import NormStats  # noqa: E402
from robovlm.utils.resources import find_resource  # noqa: E402
from robovlm_node.convert import rgb_to_image  # noqa: E402

NODE_NAME = "robovlm_soak"
WARMUP_S = 15.0


def rss_mb(pid: int) -> float | None:
    """Resident set size of ``pid`` in MB (Linux /proc), None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def engine_pid(pid: int) -> int | None:
    """The node's inference process: its child started by multiprocessing's spawn (not the resource tracker)."""
    try:
        kids = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return None
    for kid in kids:
        try:
            if b"spawn_main" in Path(f"/proc/{kid}/cmdline").read_bytes():
                return kid
        except OSError:
            continue
    return None


class Observer(Node):
    """Publishes the inputs on their own threads (absolute deadlines), records commands and diagnostics."""

    def __init__(self, joints: list[str]) -> None:
        super().__init__("soak_observer")
        self.joints = joints
        self.cmd_times: list[float] = []
        self.nonzero = 0
        self.diag: dict[str, str] = {}
        self.diag_samples: list[dict[str, str]] = []
        self._lock = threading.Lock()
        self.create_subscription(
            Twist, "cmd_vel", self._on_cmd, QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        )
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        self.head = self.create_publisher(Image, "head_camera/image_raw", qos_profile_sensor_data)
        self.hand = self.create_publisher(Image, "hand_camera/image_raw", qos_profile_sensor_data)
        self.js = self.create_publisher(JointState, "joint_states", qos_profile_sensor_data)
        rng = np.random.default_rng(0)
        self.frames = [rng.integers(0, 255, (480, 640, 3), dtype=np.uint8) for _ in range(4)]
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._run, args=(30.0, self._cameras), daemon=True),
            threading.Thread(target=self._run, args=(50.0, self._joint_states), daemon=True),
        ]

    def _on_cmd(self, msg: Twist) -> None:
        with self._lock:
            self.cmd_times.append(time.monotonic())
            self.nonzero += msg.linear.x != 0.0 or msg.linear.y != 0.0

    def _on_diag(self, msg: DiagnosticArray) -> None:
        values = {}
        for st in msg.status:
            if st.name.startswith(f"{NODE_NAME}: "):
                part = st.name.split(": ", 1)[1]
                values.update({f"{part}/{kv.key}": kv.value for kv in st.values})
                values[f"{part}/message"] = st.message
        if values:
            with self._lock:
                self.diag = values
                self.diag_samples.append(values)

    def _run(self, rate: float, publish) -> None:
        period, deadline, i = 1.0 / rate, time.monotonic(), 0
        while not self.stop.is_set():
            publish(i)
            i += 1
            deadline += period
            self.stop.wait(max(0.0, deadline - time.monotonic()))

    def _cameras(self, i: int) -> None:
        stamp = self.get_clock().now().to_msg()
        self.head.publish(rgb_to_image(self.frames[i % 4], stamp=stamp))
        self.hand.publish(rgb_to_image(self.frames[(i + 1) % 4], stamp=stamp))

    def _joint_states(self, i: int) -> None:
        self.js.publish(
            JointState(
                header=Header(stamp=self.get_clock().now().to_msg()),
                name=self.joints,
                position=[0.01 * (i % 10)] * len(self.joints),
            )
        )


def _counts(diag: dict[str, str]) -> tuple[int, dict[str, int]]:
    """(ticks, {cause: stopped ticks}) from the control-loop status."""
    ticks = int(diag.get("control loop/ticks", "0"))
    stops = {}
    for item in diag.get("control loop/stopped_ticks", "").split():
        if "=" not in item:  # "none"
            continue
        cause, n = item.split("=")
        stops[cause] = int(n)
    return ticks, stops


def soak(duration: float, load: int, model: str, engine_threads: int | None, engine: str = "torch") -> int:
    stats = NormStats.load(Path(model) / "stats.json")
    cmd = [
        sys.executable,
        "-m",
        "robovlm_node.process",
        "--ros-args",
        "-r",
        f"__node:={NODE_NAME}",
        "--params-file",
        str(find_resource("config", "robovlm.yaml")),
        "-p",
        f"model_path:={model}",
        "-p",
        "autostart:=true",
        "-p",
        "instruction:=go around the box to the cup",
    ]
    cmd += ["-p", f"engine:={engine}"]
    if engine_threads is not None:
        cmd += ["-p", f"engine_threads:={engine_threads}"]
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(load)]  # CPU-bound jobs
    node = subprocess.Popen(cmd, env=os.environ.copy(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log_lines: list[str] = []
    threading.Thread(target=lambda: log_lines.extend(node.stdout), daemon=True).start()
    rclpy.init()
    obs = Observer(list(stats.joint_names))
    executor = SingleThreadedExecutor()
    executor.add_node(obs)
    spin = threading.Thread(target=executor.spin, daemon=True)
    spin.start()
    for t in obs.threads:
        t.start()
    rss: dict[str, list[float]] = {"node": [], "engine": []}
    try:
        end = time.monotonic() + 120.0
        while not obs.diag.get("control loop/ticks") or int(obs.diag["control loop/ticks"]) == 0:
            if node.poll() is not None or time.monotonic() > end:
                raise RuntimeError("the node did not start:\n" + "".join(log_lines[-30:]))
            time.sleep(0.2)
        time.sleep(WARMUP_S)
        ticks0, stops0 = _counts(obs.diag)
        with obs._lock:
            n0, nz0 = len(obs.cmd_times), obs.nonzero
            first_sample = len(obs.diag_samples)
        first_log = len(log_lines)
        t0 = time.monotonic()
        with tqdm(total=int(duration), unit="s", desc=f"soak (load {load})", leave=False, mininterval=10) as bar:
            while (elapsed := time.monotonic() - t0) < duration:
                if node.poll() is not None:
                    raise RuntimeError("the node exited during the soak:\n" + "".join(log_lines[-30:]))
                rss["node"].append(rss_mb(node.pid) or float("nan"))
                kid = engine_pid(node.pid)
                rss["engine"].append((rss_mb(kid) if kid else None) or float("nan"))
                time.sleep(1.0)
                bar.n = min(int(elapsed), int(duration))
                bar.refresh()
        t1 = time.monotonic()
        ticks1, stops1 = _counts(obs.diag)
        with obs._lock:
            times = [t for t in obs.cmd_times[n0:] if t <= t1]
            nonzero = obs.nonzero - nz0
            samples = obs.diag_samples[first_sample:]
    finally:
        obs.stop.set()
        node.send_signal(signal.SIGINT)
        try:
            node.wait(timeout=30)
        except subprocess.TimeoutExpired:
            node.kill()
        for h in hogs:
            h.kill()
            h.wait()
        executor.shutdown()
        obs.destroy_node()
        rclpy.try_shutdown()
    ticks = ticks1 - ticks0
    stopped = {c: stops1.get(c, 0) - stops0.get(c, 0) for c in set(stops0) | set(stops1)}
    gaps = np.diff(times) if len(times) > 1 else np.array([float("nan")])
    p50 = [float(s["model/inference_latency_p50_ms"]) for s in samples if "model/inference_latency_p50_ms" in s]
    p99 = [float(s["model/inference_latency_p99_ms"]) for s in samples if "model/inference_latency_p99_ms" in s]
    threads = samples[-1].get("model/engine_threads", "?") if samples else "?"
    print(
        f"\nsoak: {duration:g} s after {WARMUP_S:g} s warm-up, {Path(model).name} checkpoint, {engine} engine, "
        f"engine_threads {threads}, two 640x480 cameras at 30 Hz + joint states at 50 Hz, {load} CPU-bound "
        f"process(es) beside the node, {os.cpu_count()} CPUs"
    )
    print(
        f"  commands: {len(times)} ({len(times) / (t1 - t0):.2f} Hz), {nonzero} non-zero; longest gap "
        f"{np.nanmax(gaps) * 1e3:.0f} ms"
    )
    fresh = 1.0 - sum(stopped.values()) / ticks if ticks else float("nan")
    print(f"  control ticks: {ticks}; fresh chunk (driving) on {fresh * 100:.2f}% of ticks")
    for cause, n in sorted(stopped.items()):
        if n:
            print(f"    stopped by {cause}: {n / ticks * 100:.2f}% ({n} ticks)")
    if p50:
        print(
            f"  inference latency p50 {np.median(p50):.1f} ms, p99 {np.max(p99):.1f} ms "
            "(node diagnostics: median of the per-second p50, highest per-second p99)"
        )
    stale = [line.split("]: ", 1)[-1].split(" is ")[0] for line in log_lines[first_log:] if " is stale" in line]
    if stale:
        counts = {label: stale.count(label) for label in sorted(set(stale))}
        print(
            "  inputs that went stale during the measurement (node log): "
            + ", ".join(f"{k} {v}x" for k, v in counts.items())
        )
    for name, values in rss.items():
        v = np.array(values)
        if np.isfinite(v).any():
            print(f"  RSS {name}: start {v[0]:.0f} MB, end {v[-1]:.0f} MB, max {np.nanmax(v):.0f} MB")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.soak", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--duration", type=float, default=600.0, help="seconds measured after warm-up (default 600)")
    p.add_argument("--load", type=int, default=0, help="CPU-bound processes to run beside the node (default 0)")
    p.add_argument("--model", default=None, help="checkpoint directory (default: the demo checkpoint)")
    p.add_argument("--engine-threads", type=int, default=None, help="override the node's engine_threads")
    p.add_argument("--engine", default="torch", help="torch | onnxruntime (--model from `robovlm export`)")
    args = p.parse_args(argv)
    model = args.model or str(find_resource("models", "demo"))
    return soak(args.duration, args.load, model, args.engine_threads, args.engine)


if __name__ == "__main__":
    sys.exit(main())
