import numpy as np
import pytest

from robovlm.runtime.safety import SafetyFilter, SafetyLimits
from robovlm.runtime.scheduler import ActionChunk, ChunkScheduler

FRESH = {"head": 0.01, "state": 0.01}


def _filter(**kw):
    return SafetyFilter(SafetyLimits(max_velocity=[0.5, 0.5], max_accel=[1.0, 1.0], **kw))


def test_every_fault_gives_zero_at_once():
    f = _filter()
    cases = [
        (dict(active=False, input_ages=FRESH, action=np.array([0.1, 0.1])), "inactive"),
        (dict(active=True, input_ages={"head": 0.6, "state": 0.0}, action=np.array([0.1, 0.1])), "stale_input"),
        (dict(active=True, input_ages={"head": None, "state": 0.0}, action=np.array([0.1, 0.1])), "stale_input"),
        (dict(active=True, input_ages=FRESH, action=None), "no_fresh_chunk"),
        (dict(active=True, input_ages=FRESH, action=np.array([np.nan, 0.1])), "nonfinite_output"),
        (dict(active=True, input_ages=FRESH, action=np.array([np.inf, 0.1])), "nonfinite_output"),
    ]
    for i, (kw, cause) in enumerate(cases):
        f.reset()
        f.apply(np.array([0.0, 0.0]), now=0.0, active=True, input_ages=FRESH)
        d = f.apply(kw.pop("action"), now=0.05 * (i + 1), **kw)
        assert d.cause == cause and np.all(d.command == 0), (cause, d)
    assert f.counts["stale_input"] == 2 and f.counts["nonfinite_output"] == 2


def test_velocity_clamp_and_acceleration_limit():
    f = _filter()
    t, last = 0.0, np.zeros(2)
    f.apply(np.zeros(2), now=t, active=True, input_ages=FRESH)
    for _ in range(40):
        t += 0.05
        d = f.apply(np.array([5.0, -0.2]), now=t, active=True, input_ages=FRESH)
        assert np.all(np.abs(d.command) <= 0.5 + 1e-12)
        assert np.all(np.abs(d.command - last) <= 1.0 * 0.05 + 1e-12)
        last = d.command
    np.testing.assert_allclose(last, [0.5, -0.2])
    assert f.counts["accel_limited"] > 0 and f.counts["velocity_clamped"] > 0


def test_limits_are_validated():
    with pytest.raises(ValueError, match="max_velocity"):
        SafetyLimits(max_velocity=[0.0], max_accel=[1.0])
    with pytest.raises(ValueError, match="max_velocity has 2 values, max_accel 1"):
        SafetyLimits(max_velocity=[1.0, 1.0], max_accel=[1.0])
    with pytest.raises(ValueError, match="input_timeout_s"):
        SafetyLimits(max_velocity=[1.0], max_accel=[1.0], input_timeout_s=float("nan"))


def _chunk(stamp, values, dt=0.1):
    return ActionChunk(stamp=stamp, dt=dt, actions=np.array(values, dtype=float).reshape(-1, 1))


def test_latest_indexes_by_time_and_expires():
    s = ChunkScheduler("latest", chunk_timeout_s=1.0)
    assert s.action_at(0.0) is None
    s.push(_chunk(0.0, [0, 1, 2, 3]))
    assert s.action_at(0.0)[0] == 0 and s.action_at(0.15)[0] == 1 and s.action_at(0.39)[0] == 3
    assert s.action_at(0.45) is None  # the chunk ran out
    s.push(_chunk(0.5, [10, 11]))
    assert s.action_at(0.5)[0] == 10
    assert s.action_at(1.6) is None  # newest chunk older than chunk_timeout_s


def test_open_loop_finishes_the_current_chunk_first():
    s = ChunkScheduler("open_loop", chunk_timeout_s=1.0)
    s.push(_chunk(0.0, [0, 1, 2]))
    assert s.action_at(0.0)[0] == 0
    s.push(_chunk(0.1, [10, 11, 12]))
    assert s.action_at(0.15)[0] == 1 and s.action_at(0.25)[0] == 2  # still the first chunk
    assert s.action_at(0.32)[0] == 12  # first ran out: switch to the newest, at the action due now


def test_ensemble_weights_older_chunks_more_like_act():
    s = ChunkScheduler("ensemble", chunk_timeout_s=1.0, ensemble_decay=0.5)
    s.push(_chunk(0.0, [0, 0, 0, 0]))
    s.push(_chunk(0.1, [1, 1, 1]))
    w = np.exp(-0.5 * np.arange(2))
    np.testing.assert_allclose(s.action_at(0.2), [(w[0] * 0 + w[1] * 1) / w.sum()])
    assert s.action_at(0.05)[0] == 0  # only the first chunk covers t=0.05
    with pytest.raises(ValueError, match="chunk_mode"):
        ChunkScheduler("smooth", chunk_timeout_s=1.0)


def test_blend_fades_a_late_chunk_in_without_a_jump():
    s = ChunkScheduler("blend", chunk_timeout_s=1.0, blend_s=0.3)
    s.push(_chunk(0.0, [0] * 10))
    assert s.action_at(0.0)[0] == 0
    s.push(_chunk(0.1, [1.0] * 10))  # arrives late: first asked for at t=0.4
    got = [s.action_at(t)[0] for t in (0.4, 0.5, 0.6, 0.7, 0.8)]
    np.testing.assert_allclose(got, [0.0, 1 / 3, 2 / 3, 1.0, 1.0], atol=1e-9)
    assert max(np.diff(got)) <= 1 / 3 + 1e-9  # never the whole step at once
    s.push(_chunk(1.2, [5.0] * 2))  # the old chunk (to t=1.1) ran out before the new one: nothing to fade from
    assert s.action_at(1.25)[0] == 5.0
    s.reset()
    assert s.action_at(1.3) is None
    with pytest.raises(ValueError, match="blend_s"):
        ChunkScheduler("blend", chunk_timeout_s=1.0, blend_s=0.0)


@pytest.mark.parametrize("mode", ["ensemble", "open_loop", "latest", "blend"])
def test_no_mode_applies_an_action_before_its_chunk_covers_it(mode):
    s = ChunkScheduler(mode, chunk_timeout_s=1.0)
    s.push(_chunk(1.0, [3.0, 3.0]))
    assert s.action_at(0.95) is None
    assert s.action_at(1.0)[0] == 3.0
