"""``CupWorldEnv``: step the MuJoCo world with base velocities, render the head and hand cameras, judge success.

Headless on CPU with ``MUJOCO_GL=osmesa`` (Debian ``libosmesa6``); set by ``robovlm.sim`` before MuJoCo loads.
World frame: x forward from the start pose, y to the left (REP-103); velocities are in the base frame.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

os.environ.setdefault("MUJOCO_GL", "osmesa")

import mujoco  # noqa: E402

from .perturb import FrameEffects, Perturbation, sample_appearance  # noqa: E402
from .world import BASE_RADIUS, JOINT_NAMES, Layout, build_mjcf, sample_layout  # noqa: E402

REACH_RADIUS = 0.3
"""Success: the base centre within this distance of the cup, no box touched, and the boxes passed on the side the
instruction names (the instruction is part of the task, not a hint)."""


@dataclass
class Observation:
    head: np.ndarray
    """(H, W, 3) uint8 RGB."""
    hand: np.ndarray
    """(H, W, 3) uint8 RGB."""
    joints: np.ndarray
    """(len(JOINT_NAMES),) positions."""
    time: float
    dropped: bool = False
    """The head camera dropped this frame (``head`` is its last one again): no new frame reaches the robot."""


@dataclass
class StepInfo:
    success: bool = False
    collision: bool = False
    wrong_side: bool = False
    """The base was alongside the boxes on the side the instruction did not name."""
    timeout: bool = False
    distance: float = float("inf")
    trace: list = field(default_factory=list)


class CupWorldEnv:
    """``perturb``: the ranges of randomized light, surfaces, camera mounts, camera faults and base dynamics
    (``robovlm.sim.perturb``; default none, today's world)."""

    def __init__(
        self,
        *,
        image_size: int = 64,
        control_dt: float = 0.1,
        time_limit_s: float = 20.0,
        perturb: Perturbation | None = None,
    ) -> None:
        self.image_size = image_size
        self.control_dt = control_dt
        self.time_limit_s = time_limit_s
        self.perturb = perturb or Perturbation()
        self.model = None
        self.data = None
        self._renderer = None
        self._effects = FrameEffects(self.perturb, 0)
        self._dynamics_rng = np.random.default_rng(0)
        self._slip = np.zeros(3)
        self._velocity = np.zeros(3)  # the base's velocity command as its drives track it (lag)

    # -------------------------------------------------------------------------------------------------- lifecycle
    def reset(self, scenario: str, seed: int) -> Observation:
        self.close()
        self.layout: Layout = sample_layout(scenario, seed)
        self.model = mujoco.MjModel.from_xml_string(build_mjcf(self.layout, sample_appearance(self.perturb, seed)))
        self._effects = FrameEffects(self.perturb, seed)
        self._dynamics_rng = np.random.default_rng([seed, 0xD1])
        self._slip = self._dynamics_rng.uniform(0.0, self.perturb.wheel_slip, 3)
        self._velocity = np.zeros(3)
        self.data = mujoco.MjData(self.model)
        self._renderer = mujoco.Renderer(self.model, self.image_size, self.image_size)
        self._substeps = max(1, int(round(self.control_dt / self.model.opt.timestep)))
        self._box_geoms = {
            mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_GEOM, f"box{i}") for i in range(len(self.layout.boxes))
        }
        self._base_geom = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_GEOM, "base")
        boxes = self.layout.boxes
        self._span = (min(b.x - b.half_x for b in boxes), max(b.x + b.half_x for b in boxes))
        self.data.ctrl[3] = self.layout.arm_pan
        self.data.ctrl[4] = self.layout.arm_lift
        self.data.qpos[3] = self.layout.arm_pan
        self.data.qpos[4] = self.layout.arm_lift
        mujoco.mj_forward(self.model, self.data)
        self.info = StepInfo(distance=self.distance_to_cup())
        return self.observe()

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    # -------------------------------------------------------------------------------------------------- state
    @property
    def time(self) -> float:
        return float(self.data.time)

    def base_pose(self) -> np.ndarray:
        """(x, y, yaw) in the world frame."""
        return self.data.qpos[:3].copy()

    def distance_to_cup(self) -> float:
        x, y, _ = self.base_pose()
        return float(np.hypot(self.layout.cup_x - x, self.layout.cup_y - y))

    def joint_positions(self) -> np.ndarray:
        return self.data.qpos[3:5].astype(np.float32).copy()

    def _render(self, camera: str) -> np.ndarray:
        self._renderer.update_scene(self.data, camera=camera)
        return self._renderer.render().copy()

    def observe(self) -> Observation:
        head, dropped = self._effects.apply("head", self._render("head"))
        hand, _ = self._effects.apply("hand", self._render("hand"))
        return Observation(head=head, hand=hand, joints=self.joint_positions(), time=self.time, dropped=dropped)

    def _touching_box(self) -> bool:
        for i in range(self.data.ncon):
            c = self.data.contact[i]
            pair = {c.geom1, c.geom2}
            if self._base_geom in pair and pair & self._box_geoms:
                return True
        return False

    # -------------------------------------------------------------------------------------------------- step
    def physics_step(self, velocity: np.ndarray) -> None:
        """One physics step (``model.opt.timestep``) under base-frame velocity ``[vx, vy(, wz)]``."""
        v = np.zeros(3)
        v[: len(velocity)] = np.nan_to_num(np.asarray(velocity, dtype=float))
        v = self._drive(v)
        yaw = self.data.qpos[2]
        c, s = np.cos(yaw), np.sin(yaw)
        self.data.ctrl[0] = c * v[0] - s * v[1]  # base frame -> world frame
        self.data.ctrl[1] = s * v[0] + c * v[1]
        self.data.ctrl[2] = v[2]
        mujoco.mj_step(self.model, self.data)
        if self._touching_box():
            self.info.collision = True
        x, y = self.data.qpos[0], self.data.qpos[1]
        if self._span[0] <= x <= self._span[1] and y * self.layout.side < 0:
            self.info.wrong_side = True

    def _drive(self, command: np.ndarray) -> np.ndarray:
        """The velocity the base really makes of ``command``: first-order lag, then slip (perturbed dynamics)."""
        p = self.perturb
        if p.velocity_lag_s == 0 and p.wheel_slip == 0:
            return command
        if p.velocity_lag_s > 0:
            self._velocity += (command - self._velocity) * min(1.0, self.physics_dt / p.velocity_lag_s)
        else:
            self._velocity = command.copy()
        slip = self._slip + self._dynamics_rng.normal(0.0, p.wheel_slip / 3, 3)
        return self._velocity * (1.0 - np.clip(slip, 0.0, 0.9))

    @property
    def physics_dt(self) -> float:
        return float(self.model.opt.timestep)

    def judge(self) -> tuple[bool, StepInfo]:
        """Update success / timeout; returns (done, info)."""
        self.info.distance = self.distance_to_cup()
        self.info.success = self.info.distance < REACH_RADIUS and not self.info.collision and not self.info.wrong_side
        self.info.timeout = self.time >= self.time_limit_s
        return self.info.success or self.info.collision or self.info.timeout, self.info

    def step(self, velocity: np.ndarray, *, render: bool = True) -> tuple[Observation | None, bool, StepInfo]:
        """Apply base-frame velocity ``[vx, vy]`` or ``[vx, vy, wz]`` for one control period."""
        for _ in range(self._substeps):
            self.physics_step(velocity)
        self.info.distance = self.distance_to_cup()
        self.info.trace.append(self.base_pose())
        done, info = self.judge()
        return (self.observe() if render else None), done, info


__all__ = ["BASE_RADIUS", "JOINT_NAMES", "CupWorldEnv", "Observation", "REACH_RADIUS", "StepInfo"]
