"""Randomized appearance and dynamics: every knob changes what the robot sees or does; ``none`` is today's world."""

import dataclasses

import numpy as np
import pytest
from PIL import Image

from robovlm.sim.env import CupWorldEnv
from robovlm.sim.perturb import LEVELS, Perturbation, level, motion_blur
from robovlm.sim.perturb_sheet import contact_sheet
from robovlm.sim.world import build_mjcf, sample_layout

SCENARIO, SEED = "1box_vert_left", 3
APPEARANCE_KNOBS = {
    "light_intensity": (0.4, 0.5),
    "light_tilt_deg": 45.0,
    "light_tint": 0.3,
    "textures": True,
    "camera_position_m": 0.03,
    "camera_angle_deg": 5.0,
    "noise_std": 8.0,
    "blur_px": 4.0,
}


def first_frames(perturb: Perturbation | None) -> tuple[np.ndarray, np.ndarray]:
    env = CupWorldEnv(image_size=48, perturb=perturb)
    obs = env.reset(SCENARIO, SEED)
    env.close()
    return obs.head, obs.hand


def test_none_renders_todays_world_bit_for_bit():
    head, hand = first_frames(None)
    none_head, none_hand = first_frames(LEVELS["none"])
    assert np.array_equal(head, none_head) and np.array_equal(hand, none_hand)
    layout = sample_layout(SCENARIO, SEED)
    assert build_mjcf(layout, None) == build_mjcf(layout)
    assert 'material="' not in build_mjcf(layout) and "<asset>" not in build_mjcf(layout)


@pytest.mark.parametrize("knob", sorted(APPEARANCE_KNOBS))
def test_each_appearance_knob_changes_the_frame(knob):
    head, hand = first_frames(None)
    p_head, p_hand = first_frames(Perturbation(**{knob: APPEARANCE_KNOBS[knob]}))
    assert not np.array_equal(head, p_head)
    if knob not in ("light_tilt_deg", "blur_px"):  # a tilt barely lights the floor differently; a blur may be short
        assert not np.array_equal(hand, p_hand)


def test_a_dim_room_is_darker():
    head, _ = first_frames(None)
    dim, _ = first_frames(Perturbation(light_intensity=(0.4, 0.4)))
    assert dim.mean() < head.mean() - 10


def test_dropped_frames_repeat_the_last_one_and_are_flagged():
    env = CupWorldEnv(image_size=32, perturb=Perturbation(drop_probability=0.5))
    obs = env.reset(SCENARIO, SEED)
    drops = 0
    for _ in range(30):
        prev = obs.head
        obs, _, _ = env.step(np.array([0.3, 0.0]))
        if obs.dropped:
            drops += 1
            assert np.array_equal(obs.head, prev)
    env.close()
    assert 5 < drops < 25


@pytest.mark.parametrize("knob,value", [("velocity_lag_s", 0.3), ("wheel_slip", 0.5)])
def test_each_dynamics_knob_slows_the_base(knob, value):
    def travelled(perturb):
        env = CupWorldEnv(image_size=16, perturb=perturb)
        env.reset(SCENARIO, SEED)
        for _ in range(3):
            env.step(np.array([0.4, 0.0]), render=False)
        x = env.base_pose()[0]
        env.close()
        return x

    clean = travelled(None)
    assert clean == pytest.approx(0.12, abs=0.02)
    assert travelled(Perturbation(**{knob: value})) < clean - 0.01


def test_the_layout_is_the_same_at_every_level():
    layouts = []
    for name in LEVELS:
        env = CupWorldEnv(image_size=16, perturb=level(name))
        env.reset(SCENARIO, SEED)
        layouts.append(env.layout)
        env.close()
    assert layouts[0] == layouts[1] == layouts[2]


def test_levels_grow_and_bad_values_are_refused():
    mild, strong = LEVELS["mild"], LEVELS["strong"]
    for f in dataclasses.fields(Perturbation):
        if isinstance(getattr(mild, f.name), float):
            assert getattr(strong, f.name) >= getattr(mild, f.name) > 0, f.name
    with pytest.raises(ValueError, match="perturb must be one of"):
        level("extreme")
    with pytest.raises(ValueError, match="noise_std"):
        Perturbation(noise_std=-1.0)
    with pytest.raises(ValueError, match="light_intensity"):
        Perturbation(light_intensity=(0.0, 1.0))
    with pytest.raises(ValueError, match="drop_probability"):
        Perturbation(drop_probability=1.0)


def test_motion_blur_keeps_the_mean_and_softens_edges():
    frame = np.zeros((20, 20, 3), np.float32)
    frame[:, 10:] = 255.0
    blurred = motion_blur(frame, 4, 0.0)
    assert blurred.shape == frame.shape
    assert 0 < blurred[5, 9, 0] < 255 and blurred[5, 0, 0] == 0 and blurred[5, 19, 0] == 255


def test_contact_sheet_writes_a_grid_of_both_cameras(tmp_path):
    path = tmp_path / "strong.png"
    contact_sheet("strong", str(path), image_size=24, seeds=2)
    assert Image.open(path).size == (24 * 8, 24 * 2)


def test_expert_data_is_collected_in_strong_rooms(tmp_path):
    from robovlm.sim.collect import collect

    result = collect(tmp_path, episodes_per_scenario=1, image_size=24, seed_offset=1000, perturb="strong")
    assert result.episodes == 8 and result.failures == 0


def test_the_demo_policy_runs_closed_loop_with_latency_in_a_strong_room():
    """The whole eval-sim loop with every fault at once: dropped frames never reach the model, the first chunk
    arrives late (the robot holds still until then), and the episode is judged as usual."""
    from robovlm.runtime.factory import build_engine
    from robovlm.sim.evaluate import run_episode
    from robovlm.sim.latency import LatencySettings
    from tests import ROOT

    engine = build_engine("torch", ROOT / "models" / "demo")
    env = CupWorldEnv(image_size=engine.config.image_size, perturb=LEVELS["strong"])
    latency = LatencySettings(inference_ms=300, camera_ms=100, jitter_ms=50)
    result = run_episode(engine, env, "1box_vert_left", 100_000, "go left around the box to the cup", latency=latency)
    env.close()
    assert result.smoothness is not None
    assert result.frames_skipped > 0
    assert 0.0 < result.smoothness.no_action_fraction < 0.2  # only until the first chunk arrives
    assert result.time_s > 0
