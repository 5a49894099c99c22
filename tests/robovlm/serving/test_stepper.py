"""The server's batched stateless step against the local engines (no Ray here: ``test_serve.py`` runs the server)."""

import numpy as np
import pytest
import torch

from robovlm.export.exporter import export_checkpoint, streaming_inputs
from robovlm.model.policy import MissingInputError, RoboVLM
from robovlm.runtime.factory import build_engine
from robovlm.runtime.remote_engine import RemoteStream
from robovlm.runtime.wire import StepRequest
from robovlm.serving.prefix_cache import PrefixCache
from robovlm.serving.stepper_factory import build_stepper
from robovlm.utils.images import resize_rgb
from tests.conftest import ALL_FUSION, _node_stats, tiny_config


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny checkpoint with every fusion module (they read the prompt's padded states) and its ONNX export."""
    torch.manual_seed(0)
    model = RoboVLM(tiny_config("kosmos2", **ALL_FUSION))
    with torch.no_grad():  # as trained: a zero-initialized FiLM is an identity that would hide a padding error
        for p in model.instruction_film.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    path = tmp_path_factory.mktemp("serve_ckpt")
    model.save_pretrained(path, stats=_node_stats())
    export_checkpoint(path, path, parity_steps=2)
    return path


def _request(stream, config, width, head, hand, state, instruction):
    size = config.image_size
    hand = None if hand is None else resize_rgb(hand, size)
    return stream.request(resize_rgb(head, size), hand, state, instruction, width)


@pytest.mark.parametrize("engine", ["torch", "onnxruntime"])
def test_batched_stateless_steps_equal_the_local_engine(exported, engine):
    """24 steps with an instruction change and missing hand frames, each batched with another robot's step (its
    own instruction, prompt length and window length), in both orders: the local engine's actions within 1e-4."""
    local = build_engine(engine, exported)
    stepper = build_stepper(engine, exported)
    cfg = stepper.config
    ours, other = RemoteStream(cfg.window_size), RemoteStream(cfg.window_size)
    theirs = list(streaming_inputs(cfg, 24, seed=3))
    worst = 0.0
    for k, (head, hand, state, instruction) in enumerate(streaming_inputs(cfg, 24)):
        expected = local.step(head, hand, state, instruction)
        mine = _request(ours, cfg, stepper.width, head, hand, state, instruction)
        h2, hand2, s2, i2 = theirs[(k * 7) % 24]
        if k == 10:
            other.reset()  # the other robot starts over: a shorter window in the same batch
        their = _request(other, cfg, stepper.width, h2, hand2, s2, i2 + " and then stop at the cup")
        replies = stepper.step_batch([their, mine] if k % 2 else [mine, their])
        mine_reply, their_reply = (replies[1], replies[0]) if k % 2 else (replies[0], replies[1])
        assert mine_reply.timing["batch_size"] == 2
        worst = max(worst, float(np.abs(ours.accept(mine_reply) - expected).max()))
        other.accept(their_reply)
    assert worst <= 1e-4, worst
    assert stepper.prefixes.misses == 4 and stepper.prefixes.hits == 44  # 2 + 2 instructions, computed once each


def test_a_step_the_model_cannot_run_fails_alone(exported, tmp_path):
    model = RoboVLM.from_pretrained(exported)
    model.config.missing_hand = "error"
    model.save_pretrained(tmp_path / "strict", stats=model.stats)
    stepper = build_stepper("torch", tmp_path / "strict")
    size, width = stepper.config.image_size, stepper.width
    frame = np.zeros((size, size, 3), np.uint8)
    state = np.zeros(stepper.config.state_dim, np.float32)
    window = np.zeros((0, width), np.float32)
    good = StepRequest("go", frame, frame, state, window)
    missing = StepRequest("go", frame, None, state, window)
    results = stepper.step_batch([good, missing, good])
    assert isinstance(results[1], MissingInputError)
    assert results[0].timing["batch_size"] == 2 and np.isfinite(results[2].chunk).all()


class _Blob:
    def __init__(self, n: int) -> None:
        self.nbytes = n


def test_the_prefix_cache_is_bounded_in_bytes_and_drops_the_least_recently_used():
    cache = PrefixCache(max_bytes=250)
    made = []

    def compute(key):
        made.append(key)
        return _Blob(100)

    for key in ("a", "b", "a", "c", "a", "b"):
        cache.get(key, compute)
    assert made == ["a", "b", "c", "b"]  # c pushed out b (a was used more recently); b is recomputed
    assert cache.nbytes == 200 and len(cache) == 2
    value, hit = cache.get("huge", lambda k: _Blob(1000))
    assert not hit and value.nbytes == 1000 and "huge" not in cache._entries  # returned, not kept
