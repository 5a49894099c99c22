"""``make demo``: the trained demo policy drives the simulated robot through the real ROS node.

The node is started exactly as ``bringup.launch.py`` starts it (the ``robovlm_node`` executable with
``config/robovlm.yaml`` and ``model_path``, ``use_sim_time:=true``, ``require_enable:=true``), as its own process;
the simulator runs here as ROS topics (``SimBridge``), its simulated operator granting motion while an episode runs.
Each episode: publish the instruction on ``instruction``, activate the node through its lifecycle service, run the
sim until the cup is reached (or a box is hit, or time runs out), deactivate.
Prints success, time to the cup, achieved control rate and inference latency per scenario; writes a contact sheet of
one episode's head camera, a plot of the commanded velocities, and one picture of the node's ``~/debug_image`` (its
plan beside the head frame), subscribed to during the first episode only.

With latency (``make demo LATENCY_MS=300 CAMERA_LATENCY_MS=100``): the bridge delivers camera frames late, stamped
with their capture time, and the node runs from ``robovlm_node.tools.sim_node``, whose engine answers no sooner than
the latency; the node itself, its parameters and its config file are the robot's.

With ``--engine remote`` (``make demo ENGINE=remote``): the model runs in ``robovlm serve`` on this machine (a local
Ray Serve on loopback, with a fresh token under ``--out``) and the node reaches it as a robot without a GPU would
(``engine:=remote``). ``--engine onnxruntime`` needs an ONNX export in the checkpoint.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 200))

import numpy as np  # noqa: E402
import rclpy  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from lifecycle_msgs.msg import Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState  # noqa: E402
from rclpy.context import Context  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from robovlm.cli.common import milliseconds  # noqa: E402
from robovlm.data.instructions import load_instructions  # noqa: E402
from robovlm.data.stats import NormStats  # noqa: E402
from robovlm.serving.local_server import LocalServer  # noqa: E402
from robovlm.sim.evaluate import EpisodeResult  # noqa: E402
from robovlm.sim.latency import LatencySettings  # noqa: E402
from robovlm.sim.world import SCENARIOS  # noqa: E402
from robovlm.utils.resources import find_resource  # noqa: E402

from ..convert import image_to_rgb  # noqa: E402
from .service_call import ServiceCaller, ServiceReplyTimeout  # noqa: E402
from .sim_bridge import SimBridge  # noqa: E402

HELD_OUT_SEED = 900_000  # never used for training data (make train-demo collects seeds from 0)


def bringup_command(
    model_path: Path,
    *,
    params_file: Path,
    use_sim_time: bool,
    node_name: str = "robovlm",
    latency: LatencySettings | None = None,
    engine: Sequence[str] = (),
) -> list[str]:
    """The command line bringup.launch.py produces for the node (executable, params file, overrides); with
    ``latency``, the same node from the simulator's slowed-engine entry point (``sim_node``); ``engine``: more
    ``name:=value`` overrides choosing the engine."""
    entry = ["-m", "robovlm_node.process"]
    if latency is not None and (latency.inference_ms or latency.jitter_ms):
        entry = ["-m", "robovlm_node.tools.sim_node", "--inference-latency-ms", f"{latency.inference_ms:g}"]
        entry += ["--latency-jitter-ms", f"{latency.jitter_ms:g}"]
    return [
        sys.executable,
        *entry,
        "--ros-args",
        "-r",
        f"__node:={node_name}",
        "--params-file",
        str(params_file),
        "-p",
        f"model_path:={model_path}",
        "-p",
        f"use_sim_time:={'true' if use_sim_time else 'false'}",
        "-p",
        "autostart:=false",
        *[arg for override in engine for arg in ("-p", override)],
    ]


class DemoClient(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("robovlm_demo", **kwargs)
        latched = QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
        )
        self.instruction = self.create_publisher(String, "instruction", latched)
        # a transition label that does not exist: answered with success false, nothing changes
        probe = ChangeState.Request(transition=Transition(label="robovlm_demo_reply_probe"))
        self.change = ServiceCaller(self, ChangeState, "robovlm/change_state", probe=probe)
        self.latencies: list[float] = []
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        self.overlays: list[Image] = []  # ~/debug_image while watched (the node draws it only then)
        self._overlay_sub: object | None = None

    def watch_overlay(self, on: bool) -> None:
        """Subscribe to the node's ``~/debug_image`` (on) or drop the subscription (off)."""
        if on and self._overlay_sub is None:
            self._overlay_sub = self.create_subscription(Image, "robovlm/debug_image", self.overlays.append, 5)
        elif not on and self._overlay_sub is not None:
            self.destroy_subscription(self._overlay_sub)
            self._overlay_sub = None

    def _on_diag(self, msg: DiagnosticArray) -> None:
        for st in msg.status:
            for kv in st.values:
                if kv.key == "inference_latency_p50_ms" and kv.value != "nan":
                    self.latencies.append(float(kv.value))

    def transition(self, tid: int, timeout: float = 120.0) -> bool:
        try:
            return bool(self.change.call(ChangeState.Request(transition=Transition(id=tid)), timeout_s=timeout).success)
        except ServiceReplyTimeout as exc:
            self.get_logger().error(str(exc))
            return False


def _verdict(out: EpisodeResult) -> str:
    if out.success:
        return "reached the cup"
    if out.collision:
        return "hit a box"
    return "wrong side" if out.wrong_side else "timed out"


def contact_sheet(frames: list[np.ndarray], path: Path, *, columns: int = 8, count: int = 24) -> None:
    from PIL import Image

    idx = np.linspace(0, len(frames) - 1, min(count, len(frames))).astype(int)
    tiles = [frames[i] for i in idx]
    h, w = tiles[0].shape[:2]
    rows = (len(tiles) + columns - 1) // columns
    sheet = np.full((rows * (h + 2), columns * (w + 2), 3), 255, np.uint8)
    for k, tile in enumerate(tiles):
        r, c = divmod(k, columns)
        sheet[r * (h + 2) : r * (h + 2) + h, c * (w + 2) : c * (w + 2) + w] = tile
    Image.fromarray(sheet).resize((sheet.shape[1] * 3, sheet.shape[0] * 3), Image.NEAREST).save(path)


def velocity_plot(outcomes: list[EpisodeResult], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(outcomes), 1, figsize=(8, 1.8 * len(outcomes)), sharex=True, squeeze=False)
    for ax, o in zip(axes[:, 0], outcomes):
        if o.commands:
            c = np.array(o.commands)
            ax.plot(c[:, 0], c[:, 1], label="linear.x")
            ax.plot(c[:, 0], c[:, 2], label="linear.y")
        ax.set_ylabel("m/s")
        ax.set_title(
            f"{o.scenario} seed {o.seed}: {'reached the cup' if o.success else 'failed'} in {o.time_s:.1f} s",
            fontsize=9,
        )
        ax.legend(loc="upper right", fontsize=7)
    axes[-1, 0].set_xlabel("sim time (s)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _engine(engine: str, checkpoint: Path, out_dir: Path) -> tuple[LocalServer | None, list[str]]:
    """The node's engine overrides, and for ``remote`` the local server it talks to (started here)."""
    if engine != "remote":
        return None, [f"engine:={engine}"]
    server = LocalServer(checkpoint, out_dir / "serve")
    print(f"starting robovlm serve {checkpoint} on {server.url} (log: {server.log})", flush=True)
    took = server.start()
    print(f"model server up in {took:.0f} s", flush=True)
    return server, ["engine:=remote", f"server_url:={server.url}", f"server_token_file:={server.token_file}"]


def run_demo(
    checkpoint: Path,
    *,
    episodes: int,
    out_dir: Path,
    real_time_factor: float,
    latency: LatencySettings | None = None,
    engine: str = "torch",
) -> int:
    if not (checkpoint / "model.safetensors").exists():
        print(f"error: no checkpoint at {checkpoint}; run `make train-demo` first", file=sys.stderr)
        return 2
    stats = NormStats.load(checkpoint / "stats.json")
    from robovlm.configs.model import load_config

    cfg = load_config(checkpoint)
    out_dir.mkdir(parents=True, exist_ok=True)
    instructions = load_instructions()
    latency = latency or LatencySettings()
    if not latency.zero:
        print(
            f"latency: inference {latency.inference_ms:g} ms, camera {latency.camera_ms:g} ms, "
            f"jitter up to {latency.jitter_ms:g} ms each",
            flush=True,
        )
    server, overrides = _engine(engine, checkpoint, out_dir)
    proc = subprocess.Popen(
        bringup_command(
            checkpoint,
            params_file=find_resource("config", "robovlm.yaml"),
            use_sim_time=True,
            latency=latency,
            engine=[*overrides, "require_enable:=true"],  # granted by the simulated operator (SimBridge)
        ),
        env=os.environ.copy(),
    )
    context = Context()
    rclpy.init(context=context)
    bridge = SimBridge(
        context=context,
        image_size=cfg.image_size,
        camera_period_s=stats.action_dt,
        real_time_factor=real_time_factor,
        camera_latency_ms=latency.camera_ms,
        jitter_ms=latency.jitter_ms,
        enable_topic="/robovlm/enable",  # the node's ~/enable
    )
    client = DemoClient(context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(bridge)
    executor.add_node(client)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    outcomes: list[EpisodeResult] = []
    rows = []
    try:
        if not client.transition(Transition.TRANSITION_CONFIGURE):
            raise RuntimeError("the node failed to configure (see its log above)")
        for k in range(episodes):
            scenario, seed = SCENARIOS[k % len(SCENARIOS)], HELD_OUT_SEED + k
            client.instruction.publish(String(data=instructions[scenario]))
            time.sleep(0.3)
            if not client.transition(Transition.TRANSITION_ACTIVATE):
                raise RuntimeError("the node failed to activate")
            n_lat = len(client.latencies)
            client.watch_overlay(k == 0)  # one episode's overlay picture: the node draws it only while watched
            out = bridge.run_episode(scenario, seed)
            client.watch_overlay(False)
            client.transition(Transition.TRANSITION_DEACTIVATE)
            outcomes.append(out)
            rate = len(out.commands) / max(out.time_s, 1e-9)
            lat = client.latencies[n_lat:] or client.latencies[-1:]
            rows.append(
                (
                    scenario,
                    seed,
                    out.success,
                    out.collision,
                    out.time_s,
                    rate,
                    float(np.median(lat)) if lat else float("nan"),
                )
            )
            print(
                f"{scenario:<18} {_verdict(out):<16}"
                f" {out.time_s:5.1f} s  control {rate:5.1f} Hz  inference p50 {rows[-1][-1]:5.1f} ms",
                flush=True,
            )
        client.transition(Transition.TRANSITION_CLEANUP)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        if server is not None:
            server.close()
        executor.shutdown()
        spinner.join(timeout=5)
        bridge.destroy_node()
        client.destroy_node()
        rclpy.try_shutdown(context=context)
    ok = sum(r[2] for r in rows)
    print(
        f"\n{ok}/{len(rows)} episodes reached the cup over ROS (control {np.mean([r[5] for r in rows]):.1f} Hz "
        f"of sim time, inference p50 {np.nanmedian([r[6] for r in rows]):.1f} ms)"
    )
    if outcomes:
        sheet, plot = out_dir / "episode_head_camera.png", out_dir / "commanded_velocities.png"
        contact_sheet(outcomes[0].frames, sheet)
        velocity_plot(outcomes, plot)
        print(f"pictures: {sheet} (head camera, {outcomes[0].scenario}) and {plot}")
    if client.overlays:  # the middle of the first episode: the robot on its way, its plan ahead of it
        overlay = out_dir / "plan_overlay.png"
        from PIL import Image as PILImage

        PILImage.fromarray(image_to_rgb(client.overlays[len(client.overlays) // 2])).save(overlay)
        print(f"overlay: {overlay} (~/debug_image: the model's head frame, its plan, the instruction)")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m robovlm_node.demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--checkpoint", type=Path, default=None, help="checkpoint directory (default: the shipped models/demo)"
    )
    p.add_argument("--episodes", type=int, default=8, help="episodes (cycles through the 8 scenarios)")
    p.add_argument("--out", type=Path, default=Path("out") / "demo")
    p.add_argument("--real-time-factor", type=float, default=1.0)
    p.add_argument("--inference-latency-ms", type=milliseconds, default=0.0, help="each model step takes at least this")
    p.add_argument("--camera-latency-ms", type=milliseconds, default=0.0, help="camera frames arrive this much late")
    p.add_argument("--latency-jitter-ms", type=milliseconds, default=0.0, help="uniform [0, this] added to each")
    p.add_argument(
        "--engine",
        choices=["torch", "onnxruntime", "remote"],
        default="torch",
        help="remote: the model in a local robovlm serve, reached over HTTP as engine:=remote",
    )
    a = p.parse_args(argv)
    return run_demo(
        a.checkpoint or find_resource("models", "demo"),
        episodes=a.episodes,
        out_dir=a.out,
        real_time_factor=a.real_time_factor,
        latency=LatencySettings(
            inference_ms=a.inference_latency_ms, camera_ms=a.camera_latency_ms, jitter_ms=a.latency_jitter_ms
        ),
        engine=a.engine,
    )


if __name__ == "__main__":
    sys.exit(main())
