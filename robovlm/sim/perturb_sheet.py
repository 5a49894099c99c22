"""A contact sheet of what the policy faces at a perturbation level, for a person to look at."""

from __future__ import annotations

import numpy as np
from PIL import Image

from .env import CupWorldEnv
from .expert import WaypointExpert
from .perturb import level
from .world import SCENARIOS


def contact_sheet(name: str, path: str, *, image_size: int = 96, seeds: int = 8) -> None:
    """A PNG of what the policy faces at level ``name``: per row one scenario's episode (seed k), its head and hand
    frames at the start and after 1, 2 and 3 s of the expert driving."""
    env = CupWorldEnv(image_size=image_size, perturb=level(name))
    rows = []
    for k in range(seeds):
        obs = env.reset(SCENARIOS[k % len(SCENARIOS)], k)
        expert = WaypointExpert(env.layout)
        tiles = []
        for _ in range(4):
            tiles += [obs.head, obs.hand]
            for _ in range(10):
                nxt, _, _ = env.step(expert.action(env.base_pose()))
                assert nxt is not None  # rendered
                obs = nxt
        rows.append(np.concatenate(tiles, axis=1))
    env.close()
    Image.fromarray(np.concatenate(rows, axis=0)).save(path)
