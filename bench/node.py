"""``make bench`` (node part): control-loop timing while the model runs flat out, measured through the real node,
and what a full-size camera frame costs on the node's path.

- control-period jitter: p50/p99 of |period - 1/rate| as a fraction of the period, over the control timer's own
  ticks, while camera frames arrive faster than the model can use them (inference never idles);
- end-to-end latency: camera header stamp -> the first command computed from that frame.
- preprocessing: one step as the node runs it (sensor_msgs/Image -> RGB -> resized to the model's input on the
  node side -> engine process -> actions) on 640x480 frames vs frames already at the model's size, on the demo
  checkpoint (56 px, where resizing weighs most), beside the earlier path that sent full frames to the engine.
The timing part runs the demo-scale model (``models/configs/kosmos2_small.json``, random weights) on the CPU.

``python -m bench.node --visualization``: the control-period jitter without and with a viewer subscribed to the
node's ``~/plan``, ``~/executed`` and ``~/debug_image`` (issue 35; ``bench/results/plan_view.md``).
``python -m bench.node --recording``: the same without and with the node recording its rollouts (``record_dir``;
issue 36; ``bench/results/recording.md``).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 200))

import rclpy  # noqa: E402
import torch  # noqa: E402
from rclpy.context import Context  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import Image, JointState  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from robovlm.configs.model import load_config  # noqa: E402
from robovlm.model.policy import RoboVLM  # noqa: E402
from robovlm.utils.resources import find_resource  # noqa: E402
from robovlm_node.convert import rgb_to_image  # noqa: E402
from robovlm_node.node import RoboVLMNode  # noqa: E402

FEED_SHAPE = tuple(int(v) for v in os.environ.get("ROBOVLM_BENCH_FEED_SHAPE", "240,320,3").split(","))


def measure(seconds: float, rate_hz: float, camera_hz: float, *, viewer: bool = False, record_dir: str = "") -> dict:
    """``viewer``: the feeder process also subscribes to ``~/plan``, ``~/executed`` and ``~/debug_image``;
    ``record_dir``: the node records the run there (``record_dir``, at the model's input size)."""
    torch.manual_seed(0)
    ckpt = tempfile.mkdtemp(prefix="robovlm_bench_")
    model = RoboVLM(load_config(find_resource("models", "configs", "kosmos2_small.json")), with_clip=False)
    model.save_pretrained(ckpt)
    joints = model.stats.joint_names
    context = Context()
    rclpy.init(context=context)
    node = RoboVLMNode(
        context=context,
        parameter_overrides=[
            Parameter("model_path", value=ckpt),
            Parameter("instruction", value="go around the box to the cup"),
            Parameter("control_rate_hz", value=rate_hz),
            Parameter("record_dir", value=record_dir),
        ],
    )
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    spin = threading.Thread(target=executor.spin, daemon=True)
    spin.start()
    # cameras and joint states come from another process, as a real driver's would (no shared GIL)
    feeder_proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.node",
            "--feeder",
            "--camera-hz",
            str(camera_hz),
            "--joints",
            ",".join(joints),
            *(["--viewer"] if viewer else []),
        ],
        env=os.environ.copy(),
    )
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        time.sleep(4.0)  # warm-up: feeder start, discovery, first steps
        t0 = node.now()
        time.sleep(seconds)
        t1 = node.now()
        status = node.status
        ticks = np.array([t for t in status.control_events.times() if t0 <= t <= t1])
        e2e = np.array([v for t, v in status.e2e_events.items() if t0 <= t <= t1])
        lat = np.array([v for t, v in status.infer_events.items() if t0 <= t <= t1])
        counters = status.snapshot()
        faults, scheduling = counters.faults, counters.control_scheduling
        assert node.supervisor is not None
        engine = node.supervisor.snapshot().name
        views = dict(node.plan_view.published) if node.plan_view is not None else {}
        recording = node.recorder.snapshot() if node.recorder is not None else None
    finally:
        feeder_proc.terminate()
        feeder_proc.wait(timeout=10)
        node.trigger_deactivate()
        executor.shutdown()
        spin.join(timeout=5)
        node.destroy_node()
        rclpy.try_shutdown(context=context)
    period = 1.0 / rate_hz
    jitter = np.abs(np.diff(ticks) - period) / period
    return {
        "ticks": len(ticks),
        "achieved_hz": (len(ticks) - 1) / (ticks[-1] - ticks[0]),
        "jitter_p50": float(np.percentile(jitter, 50)),
        "jitter_p99": float(np.percentile(jitter, 99)),
        "jitter_max": float(jitter.max()),
        "e2e_p50_ms": float(np.percentile(e2e, 50) * 1e3),
        "e2e_p99_ms": float(np.percentile(e2e, 99) * 1e3),
        "infer_p50_ms": float(np.median(lat) * 1e3),
        "infer_hz": len(lat) / (t1 - t0),
        "faults": faults,
        "scheduling": scheduling,
        "engine": engine,
        "views": views,
        "recorded_mb": 0.0 if recording is None else recording.bytes_total / 1e6,
        "record_dropped": 0 if recording is None else recording.dropped,
    }


def preprocess_cost(model: str, rounds: int) -> dict[str, float]:
    """Median ms per step, interleaved round by round: 640x480 frames on the node's path (one torch thread, as in
    the node process), model-size frames, and 640x480 frames sent whole and resized inside the engine process (the
    path before frames were prepared on the node side)."""
    from robovlm.runtime.engine import limit_threads
    from robovlm.runtime.worker import EngineProcess
    from robovlm_node.convert import frame_at_size, image_to_rgb

    limit_threads(1)
    engine = EngineProcess("torch", model, threads=1)
    size = engine.config.image_size
    state = np.zeros(engine.state_dim, dtype=np.float32)
    rng = np.random.default_rng(0)
    cases = {
        "640x480": ((480, 640, 3), True),
        "model size": ((size, size, 3), True),
        "640x480 resized in the engine": ((480, 640, 3), False),
    }
    msgs = {
        k: [rgb_to_image(rng.integers(0, 255, shape, dtype=np.uint8)) for _ in range(4)]
        for k, (shape, _) in cases.items()
    }
    times: dict[str, list[float]] = {k: [] for k in cases}
    try:
        for i in range(rounds + 3):
            for label, (_, on_node) in cases.items():
                m = msgs[label]
                t0 = time.perf_counter()
                if on_node:  # as the node's inference thread does
                    head, hand = frame_at_size(m[i % 4], size), frame_at_size(m[(i + 1) % 4], size)
                else:
                    head, hand = image_to_rgb(m[i % 4]), image_to_rgb(m[(i + 1) % 4])
                engine.step(head, hand, state, "go around the box to the cup")
                if i >= 3:  # the first rounds fill the window and encode the instruction
                    times[label].append(time.perf_counter() - t0)
    finally:
        engine.close()
    return {k: float(np.median(v) * 1e3) for k, v in times.items()}


def feed(camera_hz: float, joints: list[str], viewer: bool) -> None:
    """Publish head/hand frames (320x240 rgb8, stamped now) and joint states until terminated; ``viewer``: also
    subscribe to the node's visualization topics, as rviz2 would."""
    rclpy.init()
    node = Node("bench_feeder")
    if viewer:
        from nav_msgs.msg import Path

        for topic, kind in (("plan", Path), ("executed", Path), ("debug_image", Image)):
            node.create_subscription(kind, f"/robovlm/{topic}", lambda _msg: None, 1)
        spinner = threading.Thread(target=rclpy.spin, args=(node,), daemon=True)
        spinner.start()
    head = node.create_publisher(Image, "head_camera/image_raw", qos_profile_sensor_data)
    hand = node.create_publisher(Image, "hand_camera/image_raw", qos_profile_sensor_data)
    js = node.create_publisher(JointState, "joint_states", qos_profile_sensor_data)
    frames = [np.random.default_rng(i).integers(0, 255, FEED_SHAPE, dtype=np.uint8) for i in range(4)]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    i = 0
    while not stop.is_set():
        stamp = node.get_clock().now().to_msg()
        head.publish(rgb_to_image(frames[i % 4], stamp=stamp))
        hand.publish(rgb_to_image(frames[(i + 1) % 4], stamp=stamp))
        js.publish(JointState(header=Header(stamp=stamp), name=joints, position=[0.0] * len(joints)))
        i += 1
        stop.wait(1.0 / camera_hz)
    node.destroy_node()
    rclpy.try_shutdown()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.node", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--rate", type=float, default=20.0, help="control_rate_hz")
    p.add_argument("--camera-hz", type=float, default=30.0)
    p.add_argument(
        "--preprocess-rounds", type=int, default=100, help="interleaved rounds of the preprocessing benchmark"
    )
    p.add_argument(
        "--visualization",
        action="store_true",
        help="control jitter without and with a subscriber to ~/plan, ~/executed and ~/debug_image, alternated",
    )
    p.add_argument(
        "--recording",
        action="store_true",
        help="control jitter without and with the node recording (record_dir), alternated",
    )
    p.add_argument("--rounds", type=int, default=3, help="--visualization, --recording: pairs of runs (off, on)")
    p.add_argument("--feeder", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--viewer", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--joints", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.feeder:
        feed(args.camera_hz, args.joints.split(","), args.viewer)
        return 0
    from robovlm_node.node import CONTROL_SWITCH_INTERVAL_S

    sys.setswitchinterval(CONTROL_SWITCH_INTERVAL_S)  # as robovlm_node's main() does
    if args.visualization:
        return visualization_cost(args, args.rounds)
    if args.recording:
        return recording_cost(args, args.rounds)
    r = measure(args.seconds, args.rate, args.camera_hz)
    print(
        f"\nnode timing: kosmos2_small, {r['engine']} engine, control {args.rate:g} Hz ({r['scheduling']}), "
        f"cameras {args.camera_hz:g} Hz from another process, {args.seconds:g} s"
    )
    print(f"{'measurement':<52}{'value':>12}   goal")
    print(f"{'  control ticks / achieved rate (Hz)':<52}{r['ticks']:>6d} / {r['achieved_hz']:>4.1f}")
    print(f"{'  control-period jitter p50 (fraction of period)':<52}{r['jitter_p50'] * 100:>11.2f}%")
    print(f"{'  control-period jitter p99 (fraction of period)':<52}{r['jitter_p99'] * 100:>11.2f}%   < 2%")
    print(f"{'  control-period jitter max (fraction of period)':<52}{r['jitter_max'] * 100:>11.2f}%")
    print(f"{'  inference step p50 (ms) / rate (Hz)':<52}{r['infer_p50_ms']:>7.1f} / {r['infer_hz']:>4.1f}")
    print(f"{'  camera stamp -> first command p50 (ms)':<52}{r['e2e_p50_ms']:>12.1f}")
    print(f"{'  camera stamp -> first command p99 (ms)':<52}{r['e2e_p99_ms']:>12.1f}")
    print(f"  faults during the run: {r['faults'] or 'none'}")
    torch.manual_seed(0)
    small = tempfile.mkdtemp(prefix="robovlm_bench_")
    RoboVLM(load_config(find_resource("models", "configs", "kosmos2_small.json")), with_clip=False).save_pretrained(
        small
    )
    print("\npreprocessing: one step on the node's path, engine process with 1 thread, median of interleaved rounds")
    print(f"{'camera frames':<52}{'ms/step':>12}{'vs model size':>15}   goal")
    for name, path, rounds in (
        ("demo checkpoint, 56 px", str(find_resource("models", "demo")), args.preprocess_rounds),
        ("kosmos2_small, 224 px", small, max(5, args.preprocess_rounds // 5)),
    ):
        pre = preprocess_cost(path, rounds)
        base = pre["model size"]
        print(f"  {name}, {rounds} rounds")
        for label, goal in (("model size", ""), ("640x480", "<= 1.2x"), ("640x480 resized in the engine", "(before)")):
            print(f"{'    ' + label:<52}{pre[label]:>12.1f}{pre[label] / base:>14.2f}x   {goal}")
    return 0


def visualization_cost(args: argparse.Namespace, rounds: int) -> int:
    """Control-period jitter without and with a viewer, runs alternated (off, on, off, on) so drift hits both."""
    print(f"{'run':<28}{'ticks':>7}{'Hz':>7}{'p50':>9}{'p99':>9}{'max':>9}   messages built (plan/executed/image)")
    for i in range(2 * rounds):
        viewer = i % 2 == 1
        r = measure(args.seconds, args.rate, args.camera_hz, viewer=viewer)
        v = r["views"]
        built = f"{v.get('plan', 0)}/{v.get('executed', 0)}/{v.get('debug_image', 0)}"
        print(
            f"{'with viewer' if viewer else 'without viewer':<28}{r['ticks']:>7d}{r['achieved_hz']:>7.1f}"
            f"{r['jitter_p50'] * 100:>8.2f}%{r['jitter_p99'] * 100:>8.2f}%{r['jitter_max'] * 100:>8.2f}%   {built}",
            flush=True,
        )
    return 0


def recording_cost(args: argparse.Namespace, rounds: int) -> int:
    """Control-period jitter without and with the node recording, runs alternated (off, on, off, on)."""
    print(f"{'run':<28}{'ticks':>7}{'Hz':>7}{'p50':>9}{'p99':>9}{'max':>9}   recorded MB (dropped messages)")
    for i in range(2 * rounds):
        recording = i % 2 == 1
        with tempfile.TemporaryDirectory(prefix="robovlm_bench_rec_") as tmp:
            r = measure(args.seconds, args.rate, args.camera_hz, record_dir=tmp if recording else "")
        print(
            f"{'recording' if recording else 'not recording':<28}{r['ticks']:>7d}{r['achieved_hz']:>7.1f}"
            f"{r['jitter_p50'] * 100:>8.2f}%{r['jitter_p99'] * 100:>8.2f}%{r['jitter_max'] * 100:>8.2f}%   "
            f"{r['recorded_mb']:.1f} ({r['record_dropped']})",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
