"""Training-time image augmentation: per-window draws, each knob does what it says, a shift-only recipe unchanged."""

import numpy as np
import pytest

from robovlm.data.augment import ImageAugment


def frames(value: int = 120) -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.clip(rng.normal(value, 30, (4, 16, 16, 3)), 0, 255).astype(np.uint8)


def test_nothing_active_is_the_identity():
    aug = ImageAugment()
    assert not aug.active
    x = frames()
    assert np.array_equal(aug.draw(np.random.default_rng(0), cameras=2)(x, 0), x)


def test_shift_only_draws_what_the_old_recipe_drew():
    """The camera shift of each camera comes first from the window's generator, as before light and noise."""
    rng = np.random.default_rng([5, 1, 2])
    window = ImageAugment(shift=3).draw(np.random.default_rng([5, 1, 2]), cameras=2)
    head, hand = (tuple(int(v) for v in rng.integers(0, 7, size=2)) for _ in range(2))
    assert window.shifts == (head, hand)


def test_light_changes_brightness_within_its_range_and_alike_for_every_frame():
    x = frames()
    means = []
    for seed in range(50):
        y = ImageAugment(light=0.5).draw(np.random.default_rng(seed), cameras=1)(x, 0)
        ratio = y.reshape(4, -1).mean(1) / x.reshape(4, -1).mean(1)
        assert np.ptp(ratio) < 0.02  # one room per window
        means.append(ratio.mean())
    assert min(means) < 0.75 and max(means) > 1.25
    assert 0.4 < min(means) and max(means) < 1.8


def test_noise_adds_noise_of_at_most_its_std():
    x = np.full((2, 32, 32, 3), 128, np.uint8)
    stds = [
        (ImageAugment(noise=8.0).draw(np.random.default_rng(s), cameras=2)(x, 0).astype(float) - 128).std()
        for s in range(20)
    ]
    assert max(stds) <= 8.5 and max(stds) > 3


def test_cameras_get_their_own_noise():
    x = np.full((1, 32, 32, 3), 128, np.uint8)
    w = ImageAugment(noise=8.0).draw(np.random.default_rng(1), cameras=2)
    assert not np.array_equal(w(x, 0), w(x, 1))


@pytest.mark.parametrize("kwargs", [{"shift": -1}, {"light": 1.0}, {"light": float("nan")}, {"noise": -2.0}])
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        ImageAugment(**kwargs)
