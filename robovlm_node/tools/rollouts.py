"""Rollouts through the node over ROS, watched by a simulated operator and recorded by the node (``make flywheel``).

The node runs as the robot runs it (``bringup_command``: the ``robovlm_node`` process with ``config/robovlm.yaml``,
``use_sim_time``, ``require_enable``), with ``record_dir`` set and ``operator_cmd_topic`` the simulated operator's
topic; the simulator is ``SimBridge`` here, its operator (``robovlm.sim.operator``) taking over through that topic.
Each episode: the instruction on ``instruction``, activate, run until the cup, a box or the time limit, the outcome on
``~/outcome``, deactivate. The node writes one recording per episode; the caller trains on them.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import rclpy
from lifecycle_msgs.msg import Transition
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy
from std_msgs.msg import String

from robovlm.data.instructions import load_instructions
from robovlm.data.stats import NormStats
from robovlm.sim.operator import OperatorSettings, SimulatedOperator
from robovlm.sim.perturb import Perturbation, level
from robovlm.sim.world import SCENARIOS
from robovlm.utils.resources import find_resource

from .demo import DemoClient, bringup_command
from .sim_bridge import OPERATOR_TIMEOUT_S, SimBridge

OPERATOR_TOPIC = "/operator/cmd_vel"


@dataclass
class Rollout:
    scenario: str
    seed: int
    success: bool
    collision: bool
    wrong_side: bool
    time_s: float
    interventions: int
    operator_frames: int

    @property
    def outcome(self) -> str:
        if self.success:
            return "success"
        why = "hit a box" if self.collision else "wrong side" if self.wrong_side else "timed out"
        return f"failure: {why}"


def run_rollouts(
    checkpoint: Path,
    record_dir: Path,
    *,
    seeds: list[int],
    real_time_factor: float = 1.0,
    log_path: Path | None = None,
    operator: OperatorSettings | None = None,
    perturb: str = "none",
) -> list[Rollout]:
    """Episode k runs scenario ``SCENARIOS[k % 8]`` on layout ``seeds[k]`` in a room of ``perturb``'s level; the
    node's log goes to ``log_path``."""
    room = level(perturb)  # a bad level fails before the node starts
    stats = NormStats.load(checkpoint / "stats.json")
    from robovlm.configs.model import load_config

    cfg = load_config(checkpoint)
    instructions = load_instructions()
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "w") if log_path is not None else subprocess.DEVNULL  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        bringup_command(
            checkpoint,
            params_file=find_resource("config", "robovlm.yaml"),
            use_sim_time=True,
            engine=[
                "require_enable:=true",
                f"record_dir:={record_dir}",
                f"operator_cmd_topic:={OPERATOR_TOPIC}",
                f"takeover_timeout_s:={OPERATOR_TIMEOUT_S}",
            ],
        ),
        env=os.environ.copy(),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:  # from here on, however the run ends (an error, ``kill``), the node process ends with it
        return _drive(
            seeds,
            cfg.image_size,
            stats.action_dt,
            real_time_factor,
            room,
            SimulatedOperator(operator, dt=stats.action_dt),
            instructions,
            log_path,
        )
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        if not isinstance(log, int):
            log.close()


def _drive(
    seeds: list[int],
    image_size: int,
    action_dt: float,
    real_time_factor: float,
    room: Perturbation,
    watcher: SimulatedOperator,
    instructions: dict[str, str],
    log_path: Path | None,
) -> list[Rollout]:
    """The rollouts, over ROS, against the node ``run_rollouts`` started."""
    context = Context()
    rclpy.init(context=context)
    bridge = SimBridge(
        context=context,
        image_size=image_size,
        camera_period_s=action_dt,
        real_time_factor=real_time_factor,
        enable_topic="/robovlm/enable",
        operator_topic=OPERATOR_TOPIC,
        perturb=room,
    )
    client = DemoClient(context=context)
    reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    outcome_pub = client.create_publisher(String, "/robovlm/outcome", reliable)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(bridge)
    executor.add_node(client)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    out: list[Rollout] = []
    try:
        if not client.transition(Transition.TRANSITION_CONFIGURE):
            raise RuntimeError(f"the node failed to configure (its log: {log_path})")
        for k, seed in enumerate(seeds):
            scenario = SCENARIOS[k % len(SCENARIOS)]
            client.instruction.publish(String(data=instructions[scenario]))
            time.sleep(0.3)
            if not client.transition(Transition.TRANSITION_ACTIVATE):
                raise RuntimeError(f"the node failed to activate (its log: {log_path})")
            r = bridge.run_episode(scenario, seed, operator=watcher)
            rollout = Rollout(
                scenario=scenario,
                seed=seed,
                success=r.success,
                collision=r.collision,
                wrong_side=r.wrong_side,
                time_s=r.time_s,
                interventions=watcher.interventions,
                operator_frames=watcher.frames,
            )
            outcome_pub.publish(String(data=rollout.outcome))  # into the episode, which stays open for it
            time.sleep(0.2)
            client.transition(Transition.TRANSITION_DEACTIVATE)
            out.append(rollout)
        client.transition(Transition.TRANSITION_CLEANUP)  # closes the last recording
    finally:
        executor.shutdown()
        spinner.join(timeout=5)
        bridge.destroy_node()
        client.destroy_node()
        rclpy.try_shutdown(context=context)
    return out
