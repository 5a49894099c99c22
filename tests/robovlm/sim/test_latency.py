"""The latency model of ``eval-sim``: chunks never early, a busy model skips frames, zero latency is today's loop."""

import numpy as np
import pytest

from robovlm.sim.latency import DelayedInference, LatencySettings, SlowedEngine

DT = 0.1


def drive(settings: LatencySettings, ticks: int = 40, seed: int = 0):
    """Frames captured every DT; returns (poll time, chunk, frames the model ran on) and the model."""
    model = DelayedInference(settings, dt=DT, rng=np.random.default_rng(seed))
    seen: list[float] = []
    out = []

    def run(frame: float) -> np.ndarray:
        seen.append(frame)
        return np.full((5, 2), frame)

    for k in range(ticks):
        now = round(k * DT, 9)
        model.add_frame(now, now)
        for chunk in model.poll(now, run):
            out.append((now, chunk))
    return out, seen, model


def test_a_chunk_is_never_available_before_its_frame_plus_both_latencies():
    settings = LatencySettings(inference_ms=250, camera_ms=50)
    out, _, model = drive(settings)
    assert len(out) == len(model.latencies) > 5
    for (now, chunk), latency in zip(out, model.latencies):
        # at least both latencies; at most one frame period more (waiting for a busy model to finish)
        assert 0.3 - 1e-9 <= latency <= 0.3 + DT + 1e-9
        assert now >= chunk.stamp + latency - 1e-9
        assert now < chunk.stamp + latency + DT - 1e-9  # handed over at the first tick after it is ready
        assert chunk.actions[0, 0] == chunk.stamp  # the chunk of that frame, stamped with its capture time


def test_a_busy_model_skips_frames_and_counts_them():
    out, seen, model = drive(LatencySettings(inference_ms=250, camera_ms=50), ticks=40)
    assert model.frames_skipped > 0
    assert model.frames_used == len(seen)
    assert model.frames_used + model.frames_skipped <= 40
    assert seen == sorted(seen)
    # the model restarts on the newest frame it has: never on one older than another already arrived
    gaps = np.diff(seen)
    assert np.all(gaps >= DT - 1e-9)
    assert np.all(gaps <= 0.3 + DT + 1e-9)


def test_zero_latency_is_the_synchronous_loop():
    out, seen, model = drive(LatencySettings())
    assert [now for now, _ in out] == [c.stamp for _, c in out] == seen
    assert model.frames_skipped == 0 and len(out) == 40


def test_jitter_stays_in_its_range_and_is_reproducible():
    settings = LatencySettings(inference_ms=100, camera_ms=50, jitter_ms=80)
    _, _, model = drive(settings, ticks=200, seed=3)
    lat = np.asarray(model.latencies)
    assert lat.min() >= 0.15 - 1e-9 and lat.max() <= 0.15 + 2 * 0.08 + DT + 1e-9
    assert lat.std() > 0.01
    assert drive(settings, ticks=200, seed=3)[2].latencies == model.latencies


@pytest.mark.parametrize("field", ["inference_ms", "camera_ms", "jitter_ms"])
@pytest.mark.parametrize("value", [-1.0, float("nan"), float("inf")])
def test_bad_latency_settings_are_refused(field, value):
    with pytest.raises(ValueError, match=field):
        LatencySettings(**{field: value})


def test_the_cli_refuses_a_negative_latency(capsys):
    from robovlm.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["eval-sim", "--checkpoint", "models/demo", "--inference-latency-ms", "-5"])
    assert exit_.value.code == 2
    assert "must be a finite number >= 0" in capsys.readouterr().err


class _Engine:
    name = "fake"

    def __init__(self) -> None:
        self.steps = 0

    def step(self, *args):
        self.steps += 1
        return np.zeros((2, 2))


def test_the_slowed_engine_holds_each_step_for_the_latency_and_is_otherwise_the_engine():
    import time

    inner = _Engine()
    slow = SlowedEngine(inner, LatencySettings(inference_ms=60, jitter_ms=20), rng=np.random.default_rng(0))
    for _ in range(3):
        t0 = time.monotonic()
        assert slow.step("head", None).shape == (2, 2)
        assert time.monotonic() - t0 >= 0.06
    assert inner.steps == 3 and slow.name == "fake"
    assert len(slow.delays) == 3 and all(0.0 < d <= 0.08 for d in slow.delays)
