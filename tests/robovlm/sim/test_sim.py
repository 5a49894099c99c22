import numpy as np
import pytest

from robovlm.sim.env import CupWorldEnv
from robovlm.sim.expert import WaypointExpert
from robovlm.sim.world import JOINT_NAMES, SCENARIOS, build_mjcf, sample_layout


@pytest.fixture(scope="module")
def env():
    e = CupWorldEnv(image_size=32)
    yield e
    e.close()


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_expert_succeeds_in_every_scenario(env, scenario):
    for seed in (0, 7):
        obs = env.reset(scenario, seed)
        expert = WaypointExpert(env.layout)
        done = False
        while not done:
            obs, done, info = env.step(expert.action(env.base_pose()))
        assert info.success and not info.collision, (scenario, seed, info)
        assert np.sign(np.mean([p[1] for p in info.trace])) == env.layout.side  # it passed on the instructed side
    assert obs.head.shape == (32, 32, 3) and obs.hand.dtype == np.uint8 and obs.joints.shape == (len(JOINT_NAMES),)


def test_passing_on_the_other_side_is_not_a_success(env):
    env.reset("1box_vert_left", 2)
    env.layout = env.layout.__class__(**{**env.layout.__dict__, "scenario": "1box_vert_right"})  # told: right
    expert_left = WaypointExpert(sample_layout("1box_vert_left", 2))  # ... but drives around on the left
    done = False
    while not done:
        _, done, info = env.step(expert_left.action(env.base_pose()), render=False)
    assert info.wrong_side and not info.success and not info.collision


def test_driving_straight_hits_the_box_and_standing_still_times_out(env):
    env.reset("1box_hori_left", 3)
    done = False
    while not done:
        _, done, info = env.step(np.array([0.4, 0.0]), render=False)
    assert info.collision and not info.success
    short = CupWorldEnv(image_size=16, time_limit_s=1.0)
    short.reset("2box_vert_right", 1)
    done = False
    while not done:
        _, done, info = short.step(np.zeros(2), render=False)
    assert info.timeout and not info.success
    short.close()


def test_layouts_are_randomized_and_scenarios_differ():
    a, b = sample_layout("2box_hori_left", 1), sample_layout("2box_hori_left", 2)
    assert a != b and len(a.boxes) == 2 and a.boxes[0].half_y > a.boxes[0].half_x  # horizontal: wide across the path
    v = sample_layout("1box_vert_right", 1)
    assert len(v.boxes) == 1 and v.boxes[0].half_x > v.boxes[0].half_y and v.side == -1.0
    assert "<mujoco" in build_mjcf(a)
    with pytest.raises(ValueError, match="unknown scenario"):
        sample_layout("3box_vert_left", 0)
