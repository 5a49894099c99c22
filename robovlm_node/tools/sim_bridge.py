"""The simulator as ROS topics: the unchanged robovlm_node drives the simulated robot.

Publishes ``/clock`` every physics step (100 Hz of sim time), the head and hand cameras (``rgb8`` Images) and
``joint_states`` every ``camera_period_s``, stamped with sim time; applies ``cmd_vel`` like a base controller with a
0.5 s command timeout (an old command brakes to zero). Sim time runs at ``real_time_factor`` times the wall clock.
``camera_latency_ms`` (plus a uniform ``[0, jitter_ms]`` per frame): the camera images are published that much sim
time after their capture, stamped with the capture time, in order, as a camera driver delivers them; joint states
are not delayed. ``enable_topic`` (when set): the simulated operator's heartbeat, ``std_msgs/Bool`` true with every
camera frame while an episode runs, so a node with ``require_enable`` drives only during episodes and starts each
one from a fresh plan (docs/robot.md). The cameras carry a real sensor's noise (``sensor_noise_std``, Gaussian, in
0-255 units, drawn per frame): a renderer gives identical frames of a still scene, which the node's frozen-camera
check (``max_frozen_s``) would rightly take for a frozen driver.

``operator_topic`` (when set): a simulated operator (``robovlm.sim.operator``) watches every episode run with one,
publishes its commands there while it has the robot (the node, whose ``operator_cmd_topic`` it is, takes that as a
takeover), and the base takes them over the node's ``cmd_vel`` while they are newer than ``OPERATOR_TIMEOUT_S``, as
twist_mux gives teleop priority.

``perturb`` (a ``robovlm.sim.perturb`` level; parameter ``perturb`` of ``robovlm_sim``): the randomized room, mounts,
camera faults and base dynamics of that level, drawn per episode from its seed as ``eval-sim --perturb`` draws them;
the read noise comes on top.
"""

from __future__ import annotations

import threading
import time
from collections import deque

import numpy as np
import rclpy
from geometry_msgs.msg import Twist, Vector3
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool

from robovlm.sim.env import CupWorldEnv
from robovlm.sim.evaluate import EpisodeResult
from robovlm.sim.latency import draw_jitter_s
from robovlm.sim.operator import SimulatedOperator
from robovlm.sim.perturb import FrameEffects, Perturbation, level
from robovlm.sim.world import JOINT_NAMES

from ..convert import rgb_to_image

CMD_TIMEOUT_S = 0.5
OPERATOR_TIMEOUT_S = 0.3
"""The mux's timeout for the operator's input, the node's ``takeover_timeout_s`` in ``make flywheel``."""
SENSOR_NOISE_STD = 1.0
"""A camera's read noise, 0-255 units: enough that no two frames of a still scene have the same bytes, a third of the
perturbation grid's mildest noise (``robovlm.sim.perturb``), so the policy sees the scene it was trained on."""


class SimBridge(Node):
    def __init__(
        self,
        *,
        image_size: int = 56,
        camera_period_s: float = 0.1,
        real_time_factor: float = 1.0,
        camera_latency_ms: float = 0.0,
        jitter_ms: float = 0.0,
        seed: int = 0,
        enable_topic: str = "",
        sensor_noise_std: float = SENSOR_NOISE_STD,
        operator_topic: str = "",
        perturb: Perturbation | None = None,
        **kwargs,
    ) -> None:
        super().__init__("robovlm_sim", **kwargs)
        if not (camera_latency_ms >= 0 and jitter_ms >= 0):
            raise ValueError(f"camera latency and jitter must be >= 0 ms, got {camera_latency_ms}, {jitter_ms}")
        self.camera_latency_s = camera_latency_ms / 1000.0
        self.jitter_ms = jitter_ms
        self._rng = np.random.default_rng(seed)
        self._noise = Perturbation(noise_std=sensor_noise_std)
        self._effects = FrameEffects(self._noise, seed)
        self._in_flight: deque[tuple[float, Image, Image]] = deque()  # (due sim time, head, hand)
        self.env = CupWorldEnv(image_size=image_size, control_dt=camera_period_s, perturb=perturb)
        self.camera_period_s = camera_period_s
        self.rtf = real_time_factor
        self._clock_pub = self.create_publisher(Clock, "/clock", 10)
        self._head_pub = self.create_publisher(Image, "head_camera/image_raw", qos_profile_sensor_data)
        self._hand_pub = self.create_publisher(Image, "hand_camera/image_raw", qos_profile_sensor_data)
        self._joint_pub = self.create_publisher(JointState, "joint_states", qos_profile_sensor_data)
        reliable = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
        self._enable_pub = self.create_publisher(Bool, enable_topic, reliable) if enable_topic else None
        cmd_qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        self._operator_pub = self.create_publisher(Twist, operator_topic, cmd_qos) if operator_topic else None
        self._operator: SimulatedOperator | None = None
        self._operator_cmd = np.zeros(2)
        self._operator_time = -np.inf
        self.create_subscription(
            Twist, "cmd_vel", self._on_cmd, QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        )
        self._lock = threading.Lock()
        self._cmd = np.zeros(2)
        self._cmd_time = -np.inf
        self._commands: list[tuple[float, float, float]] = []
        self._offset = 0.0  # sim clock across episodes: never jumps backwards for the node

    def _on_cmd(self, msg: Twist) -> None:
        with self._lock:
            self._cmd = np.array([msg.linear.x, msg.linear.y])
            self._cmd_time = self.env.time if self.env.data is not None else 0.0
            self._commands.append((self._cmd_time, msg.linear.x, msg.linear.y))

    def sim_time(self) -> float:
        return self._offset + (self.env.time if self.env.data is not None else 0.0)

    def _stamp(self):
        return rclpy.time.Time(nanoseconds=int(round((1.0 + self.sim_time()) * 1e9))).to_msg()

    def _publish_clock(self) -> None:
        self._clock_pub.publish(Clock(clock=self._stamp()))

    def _publish_sensors(self) -> np.ndarray:
        obs = self.env.observe()
        stamp = self._stamp()
        head = rgb_to_image(self._effects.apply("head", obs.head)[0], stamp=stamp, frame_id="head_camera")
        hand = rgb_to_image(self._effects.apply("hand", obs.hand)[0], stamp=stamp, frame_id="hand_camera")
        due = self.sim_time() + self.camera_latency_s + draw_jitter_s(self.jitter_ms, self._rng)
        if self._in_flight:
            due = max(due, self._in_flight[-1][0])  # in order
        self._in_flight.append((due, head, hand))
        self._deliver_frames()
        js = JointState(name=list(JOINT_NAMES), position=[float(v) for v in obs.joints])
        js.header.stamp = stamp
        self._joint_pub.publish(js)
        if self._enable_pub is not None:
            self._enable_pub.publish(Bool(data=True))
        self._operator_step()
        return obs.head

    def _operator_step(self) -> None:
        """The simulated operator looks at this frame's scene and the node's newest command."""
        if self._operator is None or self._operator_pub is None:
            return
        with self._lock:
            fresh = self.env.time - self._cmd_time <= CMD_TIMEOUT_S
            policy = self._cmd.copy() if fresh else None
        cmd = self._operator.command(self.env.base_pose(), policy, self.env.time)
        if cmd is None:
            return
        self._operator_cmd, self._operator_time = np.asarray(cmd, np.float64), self.env.time
        self._operator_pub.publish(Twist(linear=Vector3(x=float(cmd[0]), y=float(cmd[1]), z=0.0)))

    def _deliver_frames(self) -> None:
        """Publish the camera images whose latency has passed."""
        now = self.sim_time() + 1e-9
        while self._in_flight and self._in_flight[0][0] <= now:
            _, head, hand = self._in_flight.popleft()
            self._head_pub.publish(head)
            self._hand_pub.publish(hand)

    def run_episode(
        self,
        scenario: str,
        seed: int,
        *,
        stop: threading.Event | None = None,
        operator: SimulatedOperator | None = None,
    ) -> EpisodeResult:
        """Reset to ``scenario``/``seed`` and run until success, collision or the time limit, in scaled real time;
        ``operator`` (with ``operator_topic``) watches it and takes over when the policy goes wrong."""
        if self.env.data is not None:
            self._offset += self.env.time + 1.0
        self.env.reset(scenario, seed)
        if operator is not None and self._operator_pub is None:
            raise ValueError("an operator needs the bridge's operator_topic")
        self._operator, self._operator_time = operator, -np.inf
        if operator is not None:
            operator.reset(self.env.layout)
        self._effects = FrameEffects(self._noise, seed)  # the same noise for the same episode
        self._in_flight.clear()  # the last episode's frames never reach the next one
        with self._lock:
            self._cmd, self._cmd_time, self._commands = np.zeros(2), -np.inf, []
        frames = []
        every = max(1, int(round(self.camera_period_s / self.env.physics_dt)))
        wall0, k = time.monotonic(), 0
        self._publish_clock()
        frames.append(self._publish_sensors())
        done, info = False, self.env.info
        while not done and not (stop is not None and stop.is_set()):
            with self._lock:
                cmd = self._cmd if self.env.time - self._cmd_time <= CMD_TIMEOUT_S else np.zeros(2)
            if self.env.time - self._operator_time <= OPERATOR_TIMEOUT_S:  # the mux: the operator first
                cmd = self._operator_cmd
            self.env.physics_step(cmd)
            k += 1
            self._publish_clock()
            self._deliver_frames()
            if k % every == 0:
                frames.append(self._publish_sensors())
                done, info = self.env.judge()
            delay = wall0 + self.env.time / self.rtf - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        with self._lock:
            commands = list(self._commands)
        return EpisodeResult(
            scenario=scenario,
            seed=seed,
            success=info.success,
            collision=info.collision,
            wrong_side=info.wrong_side,
            time_s=self.env.time,
            frames=frames,
            commands=commands,
        )

    def destroy_node(self) -> None:
        self.env.close()
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    """``robovlm_sim``: run the scenarios in a loop as ROS topics (for sim.launch.py)."""
    from robovlm.sim.world import SCENARIOS

    rclpy.init(args=args)
    probe = rclpy.create_node("robovlm_sim_params")
    scenario = probe.declare_parameter("scenario", "").value
    seed = int(probe.declare_parameter("seed", 100_000).value)
    image_size = int(probe.declare_parameter("image_size", 56).value)
    perturb = level(str(probe.declare_parameter("perturb", "none").value))
    probe.destroy_node()
    bridge = SimBridge(image_size=image_size, perturb=perturb)
    spinner = threading.Thread(target=rclpy.spin, args=(bridge,), daemon=True)
    spinner.start()
    stop = threading.Event()
    try:
        k = 0
        while rclpy.ok():
            sc = scenario or SCENARIOS[k % len(SCENARIOS)]
            out = bridge.run_episode(sc, seed + k, stop=stop)
            bridge.get_logger().info(
                f"{sc} seed {seed + k}: {'reached the cup' if out.success else 'failed'} in {out.time_s:.1f} s"
            )
            k += 1
    except KeyboardInterrupt:
        stop.set()
    finally:
        bridge.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
