"""Real rclpy nodes over loopback DDS: the node under test plus a peer that feeds inputs and records outputs."""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Twist, TwistStamped
from rclpy.context import Context
from rclpy.duration import Duration
from rclpy.executors import SingleThreadedExecutor
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image, JointState

from robovlm_node.convert import rgb_to_image
from robovlm_node.node import RoboVLMNode

RATE = 20.0
VMAX = 0.3
AMAX = 1.0


def node_command(*params: str, name: str | None = None) -> list[str]:
    """The node as a process, as ``robovlm_node --ros-args -p A:=B ... -r __node:=NAME`` runs it."""
    args = [sys.executable, "-m", "robovlm_node.process", "--ros-args"]
    for p in params:
        args += ["-p", p]
    return args + (["-r", f"__node:={name}"] if name else [])


def node_params(ckpt, **kw) -> dict:
    """In-thread engine by default (fast to start); the process engine has its own tests."""
    return {
        "model_path": ckpt,
        "instruction": "go around the box to the cup",
        "control_rate_hz": RATE,
        "max_velocity": [VMAX],
        "max_accel": [AMAX],
        "input_timeout_s": 0.5,
        "engine_process": False,
        **kw,
    }


def activate(h: Harness) -> None:
    assert h.node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert h.node.trigger_activate() == TransitionCallbackReturn.SUCCESS


def statuses(h: Harness) -> dict:
    """name suffix (after 'robovlm: ') -> (level, message, values, hardware_id) of the newest /diagnostics."""
    msg = h.rec.diagnostics[-1]
    return {
        st.name.split(": ", 1)[1]: (st.level, st.message, {kv.key: kv.value for kv in st.values}, st.hardware_id)
        for st in msg.status
    }


@dataclass
class Recorded:
    commands: list[tuple[float, np.ndarray]] = field(default_factory=list)
    diagnostics: list[DiagnosticArray] = field(default_factory=list)


class Harness:
    def __init__(self, params: dict, *, image_size: int = 56) -> None:
        self.context = Context()
        rclpy.init(context=self.context)
        overrides = [Parameter(k, value=v) for k, v in params.items()]
        self.node = RoboVLMNode(context=self.context, parameter_overrides=overrides)
        self.peer = Node("peer", context=self.context)
        self.rec = Recorded()
        self._lock = threading.Lock()
        cmd_qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        self.stamped = bool(params.get("stamped", False))
        self.peer.create_subscription(
            TwistStamped if self.stamped else Twist, params.get("cmd_vel_topic", "cmd_vel"), self._on_cmd, cmd_qos
        )
        self.peer.create_subscription(DiagnosticArray, "/diagnostics", self.rec.diagnostics.append, 10)
        self.head_pub = self.peer.create_publisher(Image, "head_camera/image_raw", qos_profile_sensor_data)
        self.head_jpeg_pub = self.peer.create_publisher(
            CompressedImage, "head_camera/image_raw/compressed", qos_profile_sensor_data
        )
        self.hand_pub = self.peer.create_publisher(Image, "hand_camera/image_raw", qos_profile_sensor_data)
        self.joint_pub = self.peer.create_publisher(JointState, "joint_states", qos_profile_sensor_data)
        self.executor = SingleThreadedExecutor(context=self.context)  # see robovlm_node.process.main
        self.executor.add_node(self.node)
        self.executor.add_node(self.peer)
        self._spinning = threading.Event()
        self._spinning.set()
        self._spin = threading.Thread(target=self._spin_until_closed, daemon=True)
        self._spin.start()
        rng = np.random.default_rng(0)
        self.frames = [rng.integers(0, 255, (image_size, image_size, 3), dtype=np.uint8) for _ in range(4)]
        self._feeding = threading.Event()
        self._feeder: threading.Thread | None = None
        self.joint_names = [f"joint_{i}" for i in range(6)]

    def _spin_until_closed(self) -> None:
        while self._spinning.is_set() and self.context.ok():
            self.executor.spin_once(timeout_sec=0.05)

    def _on_cmd(self, msg: Twist | TwistStamped) -> None:
        """Record (time, [vx, vy]); time is the header stamp for TwistStamped, else the local receive time."""
        if self.stamped:
            t = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
            msg = msg.twist
        else:
            t = time.monotonic()
        with self._lock:
            self.rec.commands.append((t, np.array([msg.linear.x, msg.linear.y])))

    def commands(self, since: float = 0.0) -> list[tuple[float, np.ndarray]]:
        with self._lock:
            return [c for c in self.rec.commands if c[0] >= since]

    def stamp(self, offset_s: float = 0.0):
        """A header stamp: now on the peer's clock (as a camera driver stamps its frames), plus ``offset_s``."""
        return (self.peer.get_clock().now() + Duration(nanoseconds=int(offset_s * 1e9))).to_msg()

    def publish_inputs(self, i: int, *, head: bool = True, hand: bool = True, joints: bool = True, stamp=None) -> None:
        """One message per input, stamped now on the peer's clock (or ``stamp``)."""
        if head:
            self.head_pub.publish(rgb_to_image(self.frames[i % 4], stamp=stamp or self.stamp()))
        if hand:
            self.hand_pub.publish(rgb_to_image(self.frames[(i + 1) % 4], encoding="bgr8", stamp=stamp or self.stamp()))
        if joints:
            js = JointState(name=self.joint_names, position=[0.1 * i % 1.0] * len(self.joint_names))
            js.header.stamp = stamp or self.stamp()
            self.joint_pub.publish(js)

    def start_feeding(self, rate_hz: float = 15.0, **which) -> None:
        self._feeding.set()

        def run() -> None:
            i = 0
            while self._feeding.is_set():
                self.publish_inputs(i, **which)
                i += 1
                time.sleep(1.0 / rate_hz)

        self._feeder = threading.Thread(target=run, daemon=True)
        self._feeder.start()

    def stop_feeding(self) -> None:
        self._feeding.clear()
        if self._feeder is not None:
            self._feeder.join()

    def wait_for(self, cond, timeout: float = 10.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if cond():
                return True
            time.sleep(0.02)
        return False

    def close(self) -> None:
        self.stop_feeding()
        # The spin thread ends first: the shutdown transition destroys subscriptions, and destroying an entity
        # from this thread while the executor adds it to a wait set raises InvalidHandle in the spin thread;
        # Executor.shutdown() under a running handler can likewise destroy its guard condition.
        self._spinning.clear()
        self._spin.join(timeout=5.0)
        try:  # stop the node's own threads (loops, watchdog); publishing the final zero needs no executor
            self.node.trigger_shutdown()
        except Exception:  # already finalized, or mid-transition in a test that failed: nothing left to stop
            pass
        self.executor.shutdown()
        self.node.destroy_node()
        self.peer.destroy_node()
        rclpy.shutdown(context=self.context)
