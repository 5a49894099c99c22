"""Expert demonstrations in the user's HDF5 format (and optionally as rosbag2), from the simulator.

Noise injection (DART): the executed command is the expert's plus Gaussian noise, while the recorded action is the
expert's clean command for the state actually reached; the data then shows how to recover from small drifts,
which a policy cloned from perfect trajectories never sees.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .env import CupWorldEnv
from .expert import WaypointExpert
from .perturb import level
from .world import JOINT_NAMES, SCENARIOS

log = logging.getLogger(__name__)


@dataclass
class CollectResult:
    episodes: int
    frames: int
    failures: int


def run_expert_episode(env: CupWorldEnv, scenario: str, seed: int, *, noise: float = 0.0):
    """One episode; returns head, hand (RGB), joints, actions (N, 3), events, success."""
    rng = np.random.default_rng(10_000 + seed)
    obs = env.reset(scenario, seed)
    expert = WaypointExpert(env.layout)
    heads, hands, joints, actions = [], [], [], []
    done, info = False, env.info
    while not done:
        a = expert.action(env.base_pose())
        heads.append(obs.head)
        hands.append(obs.hand)
        joints.append(obs.joints)
        actions.append([a[0], a[1], 0.0])
        executed = a + rng.normal(0.0, noise, size=2) if noise > 0 else a
        obs, done, info = env.step(executed)
    events = ["episode_start"] + ["start_action"] * (len(actions) - 2) + ["stop_action"]
    return (
        np.stack(heads),
        np.stack(hands),
        np.stack(joints),
        np.asarray(actions, np.float32),
        events[: len(actions)],
        info.success,
    )


def collect(
    out_dir: str | Path,
    *,
    episodes_per_scenario: int,
    seed_offset: int = 0,
    image_size: int = 64,
    noise: float = 0.05,
    bags: bool = False,
    perturb: str = "none",
) -> CollectResult:
    """Expert episodes into ``out_dir``; ``perturb``: a level of ``robovlm.sim.perturb.LEVELS`` (a dropped frame is
    recorded as the camera's last one again, as a recorder holding the newest image writes it)."""
    from ..data.bag_writer import episode_to_bag
    from ..data.hdf5 import read_hdf5_episode, write_hdf5_episode
    from ..data.instructions import load_instructions

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    env = CupWorldEnv(image_size=image_size, perturb=level(perturb))
    frames = failures = written = 0
    jobs = [(sc, seed_offset + k) for k in range(episodes_per_scenario) for sc in SCENARIOS]
    for scenario, seed in tqdm(jobs, desc="expert episodes", unit="ep"):
        head, hand, joints, actions, events, ok = run_expert_episode(env, scenario, seed, noise=noise)
        if not ok:  # keep the data set to demonstrations that succeed
            failures += 1
            log.warning("expert failed %s seed %d; episode skipped", scenario, seed)
            continue
        path = out / f"sim_{scenario}_{seed:05d}.h5"
        write_hdf5_episode(
            path,
            images_rgb=head,
            hand_images_rgb=hand,
            actions=actions,
            event_types=events,
            episode_name=f"sim_{scenario}_{seed:05d}",
            frame_dt=env.control_dt,
            joint_positions=joints,
            joint_names=list(JOINT_NAMES),
        )
        if bags:
            episode_to_bag(
                read_hdf5_episode(path, load_instructions()), out / f"sim_{scenario}_{seed:05d}_bag", storage="mcap"
            )
        frames += len(actions)
        written += 1
    env.close()
    return CollectResult(episodes=written, frames=frames, failures=failures)
