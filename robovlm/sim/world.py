"""The user's task as a MuJoCo world: an omni-wheel base reaches a cup around one or two boxes.

Scenario ids follow the user's episode names: ``{1|2}box_{vert|hori}_{left|right}``. ``vert`` boxes are long along
the direction of travel, ``hori`` boxes across it; ``left``/``right`` is the side the robot must pass them on
(the instruction says which; the picture alone does not). Positions, sizes and colours are randomized per seed.

The robot: a planar base (slide x, slide y, hinge yaw, driven by velocity actuators, like an omni base taking
``cmd_vel``), a head camera on a mast, and a small arm (pan and lift joints, reported in the joint state) carrying
the hand camera.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .perturb import Appearance

SCENARIOS = tuple(f"{n}box_{o}_{s}" for n in (1, 2) for o in ("vert", "hori") for s in ("left", "right"))
JOINT_NAMES = ("arm_pan", "arm_lift")
BASE_RADIUS = 0.18


@dataclass(frozen=True)
class Box:
    x: float
    y: float
    half_x: float  # along the travel direction
    half_y: float
    rgba: tuple[float, float, float, float]


@dataclass(frozen=True)
class Layout:
    scenario: str
    boxes: tuple[Box, ...]
    cup_x: float
    cup_y: float
    cup_rgba: tuple[float, float, float, float]
    floor_rgba: tuple[float, float, float, float]
    arm_pan: float
    arm_lift: float

    @property
    def side(self) -> float:
        """+1 to pass on the left (+y), -1 on the right."""
        return 1.0 if self.scenario.endswith("left") else -1.0


def sample_layout(scenario: str, seed: int) -> Layout:
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; one of {list(SCENARIOS)}")
    rng = np.random.default_rng(seed)
    n = int(scenario[0])
    vert = "_vert_" in scenario
    cup_x = rng.uniform(2.0, 2.4)
    boxes = []
    centers = [cup_x * 0.5] if n == 1 else [cup_x * 0.38, cup_x * 0.62]
    for cx in centers:
        if vert:
            hx, hy = rng.uniform(0.16, 0.22), rng.uniform(0.08, 0.11)
        else:
            hx, hy = rng.uniform(0.07, 0.10), rng.uniform(0.22, 0.30)
        tone = rng.uniform(0.35, 0.6)
        rgba = (tone + rng.uniform(0.1, 0.25), tone * 0.75, tone * 0.45, 1.0)  # brownish cardboard
        boxes.append(
            Box(
                x=float(cx + rng.uniform(-0.05, 0.05)),
                y=float(rng.uniform(-0.04, 0.04)),
                half_x=float(hx),
                half_y=float(hy),
                rgba=(float(rgba[0]), float(rgba[1]), float(rgba[2]), float(rgba[3])),
            )
        )
    cup_rgba = (float(rng.uniform(0.75, 0.95)), float(rng.uniform(0.05, 0.2)), float(rng.uniform(0.1, 0.25)), 1.0)
    g = rng.uniform(0.55, 0.75)
    floor = (float(g), float(g + rng.uniform(-0.05, 0.05)), float(g + rng.uniform(-0.05, 0.05)), 1.0)
    return Layout(
        scenario=scenario,
        boxes=tuple(boxes),
        cup_x=float(cup_x),
        cup_y=float(rng.uniform(-0.05, 0.05)),
        cup_rgba=cup_rgba,
        floor_rgba=floor,
        arm_pan=float(rng.uniform(-0.2, 0.2)),
        arm_lift=float(rng.uniform(0.0, 0.05)),
    )


def _rgba(c) -> str:
    return " ".join(f"{v:.3f}" for v in c)


def _textures(layout: Layout, look: Appearance) -> str:
    """Textures and materials of the floor, the boxes and the cup (first colour the layout's, second drawn)."""
    assert look.textures is not None
    floor2, box2, cup2 = (_rgba(c) for c in look.textures)
    fl, bx, cp = (_rgba(c[:3]) for c in (layout.floor_rgba, layout.boxes[0].rgba, layout.cup_rgba))
    return f"""
  <asset>
    <texture name="floor" type="2d" builtin="{look.floor_builtin}" rgb1="{fl}" rgb2="{floor2}" width="64" height="64"
             mark="random" random="0.08" markrgb="{floor2}"/>
    <material name="floor" texture="floor" texrepeat="6 6"/>
    <texture name="box" type="cube" builtin="flat" rgb1="{bx}" rgb2="{box2}" width="32" height="32" mark="random"
             random="0.15" markrgb="{box2}"/>
    <material name="box" texture="box"/>
    <texture name="cup" type="cube" builtin="gradient" rgb1="{cp}" rgb2="{cup2}" width="32" height="32"/>
    <material name="cup" texture="cup"/>
  </asset>"""


def build_mjcf(layout: Layout, appearance: Appearance | None = None) -> str:
    """MJCF text of the world for ``layout``; ``appearance`` (``robovlm.sim.perturb``) changes the light, the
    surfaces and the camera mounts, None keeps today's room exactly."""
    look = appearance
    textured = look is not None and look.textures is not None

    def surface(name: str, rgba: tuple[float, ...]) -> str:
        return f'material="{name}"' if textured else f'rgba="{_rgba(rgba)}"'

    boxes = "\n".join(
        f'<body name="box{i}" pos="{b.x:.4f} {b.y:.4f} 0.2"><geom name="box{i}" type="box" '
        f'size="{b.half_x:.4f} {b.half_y:.4f} 0.2" {surface("box", b.rgba)} contype="1" conaffinity="1"/></body>'
        for i, b in enumerate(layout.boxes)
    )
    assets = _textures(layout, look) if look is not None and textured else ""
    light = 'dir="0 0 -1" diffuse="0.8 0.8 0.8"'
    head = 'pos="-0.05 0 0.55" xyaxes="0 -1 0 0.45 0 0.89"'
    hand = 'pos="0.09 0 0.03" xyaxes="0 -1 0 0.6 0 0.8"'
    if look is not None:
        light = f'dir="{_rgba(look.light_dir)}" diffuse="{_rgba(look.light_diffuse)}"'
        head = f'pos="{_rgba(look.head.pos)}" xyaxes="{_rgba(look.head.xyaxes)}"'
        hand = f'pos="{_rgba(look.hand.pos)}" xyaxes="{_rgba(look.hand.xyaxes)}"'
    return f"""
<mujoco model="robovlm_cup_world">
  <option timestep="0.01" gravity="0 0 -9.81"/>
  <visual><global offwidth="256" offheight="256"/><quality shadowsize="0"/></visual>{assets}
  <worldbody>
    <light pos="1 0 4" {light}/>
    <geom name="floor" type="plane" size="5 5 0.1" {surface("floor", layout.floor_rgba)} contype="0" conaffinity="0"/>
    <geom name="wall" type="box" pos="4.0 0 0.5" size="0.05 4 0.5" rgba="0.9 0.9 0.85 1" contype="0" conaffinity="0"/>
    {boxes}
    <body name="cup" pos="{layout.cup_x:.4f} {layout.cup_y:.4f} 0.06">
      <geom name="cup" type="cylinder" size="0.05 0.06" {surface("cup", layout.cup_rgba)} contype="0" conaffinity="0"/>
    </body>
    <body name="base" pos="0 0 0.08">
      <joint name="base_x" type="slide" axis="1 0 0" damping="0"/>
      <joint name="base_y" type="slide" axis="0 1 0" damping="0"/>
      <joint name="base_yaw" type="hinge" axis="0 0 1" damping="0" armature="0.1"/>
      <geom name="base" type="cylinder" size="{BASE_RADIUS} 0.06" mass="8" rgba="0.2 0.2 0.25 1" contype="1"
            conaffinity="1"/>
      <body name="mast" pos="0 0 0.06">
        <geom type="cylinder" size="0.02 0.25" pos="-0.05 0 0.25" rgba="0.3 0.3 0.3 1" contype="0" conaffinity="0"
              mass="0.5"/>
        <camera name="head" {head} fovy="75"/>
        <body name="arm" pos="0.1 0 0.1">
          <joint name="arm_pan" type="hinge" axis="0 0 1" range="-1 1" damping="2" armature="0.05"/>
          <geom type="cylinder" size="0.015 0.02" rgba="0.5 0.5 0.5 1" contype="0" conaffinity="0" mass="0.1"/>
          <body name="forearm">
            <joint name="arm_lift" type="slide" axis="0 0 1" range="0 0.2" damping="20" armature="0.5"/>
            <geom type="box" size="0.04 0.02 0.02" pos="0.04 0 0" rgba="0.8 0.8 0.8 1" contype="0" conaffinity="0"
                  mass="0.2"/>
            <camera name="hand" {hand} fovy="70"/>
          </body>
        </body>
      </body>
    </body>
  </worldbody>
  <actuator>
    <velocity name="vx" joint="base_x" kv="400" ctrlrange="-1 1"/>
    <velocity name="vy" joint="base_y" kv="400" ctrlrange="-1 1"/>
    <velocity name="wz" joint="base_yaw" kv="40" ctrlrange="-2 2"/>
    <position name="pan" joint="arm_pan" kp="20"/>
    <position name="lift" joint="arm_lift" kp="400"/>
  </actuator>
</mujoco>
"""
