"""``robovlm eval-sim``: closed-loop episodes with the node's runtime code, faster than real time.

Per control period (the checkpoint's ``action_dt``): render both cameras, run the engine's streaming step, hand the
chunk to the same ``ChunkScheduler`` and ``SafetyFilter`` the node uses, and apply the command to the simulator.
Ablations blind the policy: ``image`` feeds uniform grey frames, ``instruction`` replaces the instruction with one
that names no side. ``latency`` puts the robot's camera and inference delays into the loop (``robovlm.sim.latency``);
each episode also reports how smooth the scheduler's output was before the safety filter shaped it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..data.instructions import load_instructions
from ..runtime.engine import EngineBase
from ..runtime.factory import build_engine
from ..runtime.safety import SafetyFilter, SafetyLimits
from ..runtime.scheduler import ChunkScheduler
from .env import CupWorldEnv
from .latency import DelayedInference, LatencySettings
from .perturb import level
from .world import SCENARIOS

NEUTRAL_INSTRUCTION = "go to the cup"
ABLATIONS = ("image", "instruction")


@dataclass
class EpisodeResult:
    """One closed-loop episode (``eval-sim`` here, the ROS demo through ``SimBridge``)."""

    scenario: str
    seed: int
    success: bool
    collision: bool
    wrong_side: bool
    time_s: float
    frames: list = field(default_factory=list, repr=False)
    """Head-camera frames, when recorded."""
    commands: list = field(default_factory=list, repr=False)
    """Applied commands, when recorded (eval-sim: arrays; the ROS bridge: (sim time, vx, vy))."""
    smoothness: Smoothness | None = None
    """The scheduler's output before the safety filter (eval-sim)."""
    frames_skipped: int = 0
    """Frames the model never saw because it was busy (``robovlm.sim.latency``)."""


@dataclass(frozen=True)
class Smoothness:
    """How the scheduler's command moves from tick to tick, before the safety filter clamps it."""

    mean_abs_jerk: float
    """Mean over ticks and components of |v[k+1] - 2 v[k] + v[k-1]| / dt^2 (m/s^3), over runs of ticks that all had
    an action."""
    max_step: float
    """Largest |v[k+1] - v[k]| (m/s) between consecutive ticks that both had an action."""
    limited_fraction: float
    """Fraction of ticks with an action on which the filter had to limit acceleration."""
    no_action_fraction: float
    """Fraction of ticks on which the scheduler had no action (no chunk yet, or every chunk run out)."""

    @classmethod
    def of(cls, raw: list[np.ndarray | None], dt: float, limited: int) -> Smoothness:
        have = [a is not None for a in raw]
        steps = [np.abs(raw[k + 1] - raw[k]) for k in range(len(raw) - 1) if have[k] and have[k + 1]]
        jerks = [
            np.abs(raw[k + 1] - 2 * raw[k] + raw[k - 1]) / dt**2
            for k in range(1, len(raw) - 1)
            if have[k - 1] and have[k] and have[k + 1]
        ]
        n_action = sum(have)
        return cls(
            mean_abs_jerk=float(np.mean(jerks)) if jerks else 0.0,
            max_step=float(np.max(steps)) if steps else 0.0,
            limited_fraction=limited / n_action if n_action else 0.0,
            no_action_fraction=1.0 - n_action / len(raw) if raw else 0.0,
        )


@dataclass
class EvalReport:
    results: list[EpisodeResult]
    ablate: str | None

    @property
    def success_rate(self) -> float:
        return float(np.mean([r.success for r in self.results])) if self.results else 0.0

    def per_scenario(self) -> dict[str, tuple[int, int]]:
        out: dict[str, tuple[int, int]] = {}
        for r in self.results:
            ok, n = out.get(r.scenario, (0, 0))
            out[r.scenario] = (ok + int(r.success), n + 1)
        return out

    def format(self) -> str:
        lines = [
            f"closed-loop evaluation{' (ablate ' + self.ablate + ')' if self.ablate else ''}: "
            f"{sum(r.success for r in self.results)}/{len(self.results)} reached the cup "
            f"({100 * self.success_rate:.0f}%), collisions {sum(r.collision for r in self.results)}, "
            f"wrong side {sum(r.wrong_side for r in self.results)}"
        ]
        smooth = [r.smoothness for r in self.results if r.smoothness is not None]
        if smooth:
            lines.append(
                f"  scheduler output: mean |jerk| {np.mean([m.mean_abs_jerk for m in smooth]):.2f} m/s^3, largest step "
                f"{max(m.max_step for m in smooth):.3f} m/s, acceleration limited on "
                f"{100 * np.mean([m.limited_fraction for m in smooth]):.1f}% of ticks, no action on "
                f"{100 * np.mean([m.no_action_fraction for m in smooth]):.1f}%, frames skipped "
                f"{sum(r.frames_skipped for r in self.results)}"
            )
        for sc, (ok, n) in sorted(self.per_scenario().items()):
            times = [r.time_s for r in self.results if r.scenario == sc and r.success]
            t = f", mean time {np.mean(times):.1f} s" if times else ""
            lines.append(f"  {sc:<18} {ok}/{n}{t}")
        return "\n".join(lines)


def run_episode(
    engine: EngineBase,
    env: CupWorldEnv,
    scenario: str,
    seed: int,
    instruction: str,
    *,
    ablate: str | None = None,
    chunk_mode: str = "ensemble",
    max_velocity: float = 0.5,
    max_accel: float = 2.0,
    record: bool = False,
    latency: LatencySettings | None = None,
) -> EpisodeResult:
    obs = env.reset(scenario, seed)
    engine.reset()
    dt = engine.stats.action_dt
    scheduler = ChunkScheduler(chunk_mode, chunk_timeout_s=1.0)
    a = engine.action_dim
    safety = SafetyFilter(SafetyLimits(max_velocity=[max_velocity] * a, max_accel=[max_accel] * a))
    text = NEUTRAL_INSTRUCTION if ablate == "instruction" else instruction
    settings = latency or LatencySettings()
    inference: DelayedInference[tuple] = DelayedInference(settings, dt=dt, rng=np.random.default_rng([seed, 7]))
    result = EpisodeResult(scenario=scenario, seed=seed, success=False, collision=False, wrong_side=False, time_s=0.0)
    raw: list[np.ndarray | None] = []
    last_frame = env.time
    while True:
        head, hand = obs.head, obs.hand
        if ablate == "image":
            head = np.full_like(head, 128)
            hand = np.full_like(hand, 128)
        now = env.time
        if not obs.dropped:  # a dropped frame never reaches the robot
            inference.add_frame(now, (head, hand, obs.joints))
            last_frame = now
        for chunk in inference.poll(now, lambda frame: engine.step(*frame, text)):
            scheduler.push(chunk)
        action = scheduler.action_at(now)
        raw.append(None if action is None else np.asarray(action, dtype=np.float64))
        camera_age = now - last_frame + settings.camera_ms / 1000.0  # the newest frame's age at the node
        decision = safety.apply(action, now=now, active=True, input_ages={"head": camera_age})
        if record:
            result.frames.append(obs.head)
            result.commands.append(decision.command.copy())
        obs, done, info = env.step(decision.command)
        if done:
            break
    result.smoothness = Smoothness.of(raw, dt, safety.counts["accel_limited"])
    result.frames_skipped = inference.frames_skipped
    result.success, result.collision, result.wrong_side, result.time_s = (
        info.success,
        info.collision,
        info.wrong_side,
        env.time,
    )
    return result


def evaluate(
    checkpoint: str | Path,
    *,
    episodes: int,
    seed_offset: int,
    ablate: str | None = None,
    chunk_mode: str = "ensemble",
    device: str = "cpu",
    engine_name: str = "torch",
    record: int = 0,
    latency: LatencySettings | None = None,
    perturb: str = "none",
) -> EvalReport:
    """Episode k runs scenario ``SCENARIOS[k % 8]`` with seed ``seed_offset + k``. ``engine_name``: ``torch`` or
    ``onnxruntime`` (the checkpoint's ONNX export: a quantized export is checked closed loop this way). ``perturb``:
    a level of ``robovlm.sim.perturb.LEVELS``."""
    if ablate is not None and ablate not in ABLATIONS:
        raise ValueError(f"ablate must be one of {list(ABLATIONS)}, got {ablate!r}")
    level(perturb)  # a bad level fails before the engine loads
    engine = build_engine(engine_name, checkpoint, device=device)
    env = CupWorldEnv(image_size=engine.config.image_size, control_dt=engine.stats.action_dt, perturb=level(perturb))
    instructions = load_instructions()
    results = []
    for k in tqdm(range(episodes), desc="eval-sim", unit="ep"):
        scenario = SCENARIOS[k % len(SCENARIOS)]
        results.append(
            run_episode(
                engine,
                env,
                scenario,
                seed_offset + k,
                instructions[scenario],
                ablate=ablate,
                chunk_mode=chunk_mode,
                record=k < record,
                latency=latency,
            )
        )
    env.close()
    return EvalReport(results=results, ablate=ablate)
