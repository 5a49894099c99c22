import pytest
import torch

from robovlm.model.policy import MissingInputError, RoboVLM
from tests.conftest import make_batch, tiny_config

ALL_FUSION = dict(use_claw_matrix=True, use_hierarchical=True, use_advanced_attention=True)


def _stream(model, batch, b):
    model.reset()
    out = []
    for t in range(batch["head_images"].shape[1]):
        out.append(
            model.step(
                batch["head_images"][b : b + 1, t],
                batch["hand_images"][b : b + 1, t],
                batch["states"][b : b + 1, t],
                batch["instructions"][b],
            )
        )
    return torch.stack(out, dim=1)  # (1, T, n, A)


@pytest.mark.parametrize("backbone", ["kosmos2", "paligemma"])
@pytest.mark.parametrize("head", ["lstm", "mlp", "gpt"])
def test_streaming_step_equals_forward_over_the_window(float64, backbone, head):
    cfg = tiny_config(backbone, act_head={"type": head, "num_heads": 4}, **ALL_FUSION)
    model = RoboVLM(cfg).eval()
    batch = make_batch(cfg, 2, dtype=torch.float64)  # two instructions of different length: left padding
    with torch.no_grad():
        full = model(batch)["actions"]
    for b in range(2):
        torch.testing.assert_close(_stream(model, batch, b), full[b : b + 1], rtol=1e-9, atol=1e-9)


def test_instruction_film_starts_as_identity_and_streams_like_the_window_pass(float64):
    off = RoboVLM(tiny_config()).eval()
    torch.manual_seed(0)
    on = RoboVLM(tiny_config(use_instruction_film=True)).eval()
    on.load_state_dict(off.state_dict(), strict=False)  # everything but the FiLM projection, which starts at zero
    batch = make_batch(on.config, 2, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(on(batch)["actions"], off(batch)["actions"])
        for p in on.instruction_film.parameters():  # a trained FiLM: instruction-dependent scale and shift
            p.add_(torch.randn_like(p) * 0.3)
        full = on(batch)["actions"]
        swapped = on({**batch, "instructions": batch["instructions"][::-1]})["actions"]
    assert not torch.allclose(full, swapped), "the instruction must reach the actions through FiLM"
    for b in range(2):
        torch.testing.assert_close(_stream(on, batch, b), full[b : b + 1], rtol=1e-9, atol=1e-9)


def test_streaming_window_slides_like_a_fresh_window(float64):
    cfg = tiny_config(**ALL_FUSION)
    model = RoboVLM(cfg).eval()
    batch = make_batch(cfg, 1, t=cfg.window_size + 2, dtype=torch.float64)
    streamed = _stream(model, {**batch, "instructions": batch["instructions"]}, 0)
    w = cfg.window_size
    last = {k: (v[:, -w:] if torch.is_tensor(v) else v) for k, v in batch.items()}
    with torch.no_grad():
        full = model(last)["actions"]
    torch.testing.assert_close(streamed[:, -1], full[:, -1], rtol=1e-9, atol=1e-9)


def test_instruction_keys_and_values_are_reused_until_it_changes(monkeypatch):
    cfg = tiny_config()
    model = RoboVLM(cfg).eval()
    batch = make_batch(cfg, 1)
    calls = []
    original = model.backbone.embed_text
    monkeypatch.setattr(model.backbone, "embed_text", lambda ids: calls.append(ids.shape) or original(ids))
    args = (batch["head_images"][:, 0], batch["hand_images"][:, 0], batch["states"][:, 0])
    for _ in range(3):
        model.step(*args, "go left")
    assert len(calls) == 1
    assert model._prefix_state["cache"].get_seq_length() == model._prefix_state["length"]  # frame keys dropped
    model.step(*args, "go right")
    assert len(calls) == 2 and len(model._window) == 1  # new task: new prefix, fresh window


def test_state_changes_actions_when_on_and_is_ignored_when_off():
    for use_state in (True, False):
        cfg = tiny_config(use_state=use_state)
        model = RoboVLM(cfg).eval()
        batch = make_batch(cfg, 1, 1)
        outs = []
        for s in (torch.zeros(1, 1, cfg.state_dim), torch.ones(1, 1, cfg.state_dim) * 2):
            with torch.no_grad():
                outs.append(model({**batch, "states": s})["actions"])
        if use_state:
            assert model.tokens_per_frame == 2 * 4 + 2
            assert not torch.allclose(outs[0], outs[1])
        else:
            assert not hasattr(model, "state_embed") and model.tokens_per_frame == 2 * 4 + 1
            torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)


def test_state_is_required_when_on_and_its_width_checked():
    cfg = tiny_config()
    model = RoboVLM(cfg).eval()
    img = torch.randn(1, 3, cfg.image_size, cfg.image_size)
    with pytest.raises(MissingInputError, match="no state"):
        model.step(img, img, None, "go")
    with pytest.raises(ValueError, match="6 values"):
        model.step(img, img, torch.zeros(1, 4), "go")


def test_hand_camera_is_a_second_marked_stream():
    cfg = tiny_config()
    model = RoboVLM(cfg).eval()
    b = make_batch(cfg, 1, 1)
    with torch.no_grad():
        base = model(b)["actions"]
        other_hand = model({**b, "hand_images": torch.randn_like(b["hand_images"])})["actions"]
        # the same picture on both cameras: the two streams differ exactly by their learned type embeddings
        img = b["head_images"][:, 0]
        tokens = model._frame_embeds(img, img, None, b["states"][:, 0])
    assert not torch.allclose(base, other_hand)  # the hand image is used
    n = model.tokens_per_camera
    diff = tokens[:, :n] - tokens[:, n : 2 * n]
    torch.testing.assert_close(diff, (model.camera_embed[0] - model.camera_embed[1]).expand_as(diff))
    assert model.camera_embed.shape == (2, model.dim)
    model.train()
    model(b)["loss"].backward()
    assert model.camera_embed.grad[1].abs().sum() > 0  # the hand marker is learned


def test_hand_camera_off_removes_the_stream():
    cfg = tiny_config(use_hand_rgb=False)
    model = RoboVLM(cfg).eval()
    b = make_batch(cfg, 1, 1)
    assert model.tokens_per_frame == 4 + 2 and model.camera_embed.shape[0] == 1
    with torch.no_grad():
        a = model(b)["actions"]
        c = model({**b, "hand_images": torch.randn_like(b["hand_images"])})["actions"]
    torch.testing.assert_close(a, c, rtol=0, atol=0)


def test_missing_hand_frame_policy_zero_uses_the_marker_and_error_raises():
    cfg = tiny_config()
    model = RoboVLM(cfg).eval()
    b = make_batch(cfg, 1, 2)
    valid = torch.tensor([[True, False]])
    with torch.no_grad():
        full = model(b)["actions"]
        partial = model({**b, "hand_valid": valid})["actions"]
        none = model({**b, "hand_images": None, "hand_valid": None})["actions"]
    torch.testing.assert_close(partial[:, 0], full[:, 0])
    assert not torch.allclose(partial[:, 1], full[:, 1])
    # a missing hand frame gives the same tokens whether the batch carries pixels for it or not
    torch.testing.assert_close(
        model.step(b["head_images"][:, 0], None, b["states"][:, 0], b["instructions"][0]), none[:, 0]
    )
    strict = RoboVLM(tiny_config(missing_hand="error")).eval()
    with pytest.raises(MissingInputError, match="missing_hand is 'error'"):
        strict.step(b["head_images"][:, 0], None, b["states"][:, 0], "go")


@pytest.mark.parametrize(
    "flag, modules",
    [
        ("use_claw_matrix", ["claw_matrix"]),
        ("use_hierarchical", ["planner"]),
        ("use_advanced_attention", ["cross_modal", "temporal"]),
        ("use_instruction_film", ["instruction_film"]),
    ],
)
def test_each_fusion_switch_is_real_changes_output_and_gets_gradients(flag, modules):
    off = RoboVLM(tiny_config())
    on = RoboVLM(tiny_config(**{flag: True}))
    for name in modules:
        assert not hasattr(off, name) and hasattr(on, name)
    b = make_batch(on.config, 2)
    out = on(b)
    out["loss"].backward()
    for name in modules:
        grads = [p.grad for p in getattr(on, name).parameters()]
        assert all(g is not None for g in grads), name
        assert sum(g.abs().sum() for g in grads) > 0, name
    # perturbing the module changes the actions
    on.eval()
    with torch.no_grad():
        before = on(b)["actions"]
        for name in modules:
            for p in getattr(on, name).parameters():
                p.add_(torch.randn_like(p) * 0.5)
        after = on(b)["actions"]
    assert not torch.allclose(before, after)


@pytest.mark.parametrize("head", ["lstm", "mlp", "gpt"])
def test_heads_predict_bounded_chunks_at_every_step(head):
    cfg = tiny_config(act_head={"type": head, "num_heads": 4}, action_dim=3, fwd_pred_next_n=5)
    model = RoboVLM(cfg)
    out = model(make_batch(cfg, 2))
    assert out["actions"].shape == (2, cfg.window_size, 5, 3)
    assert out["actions"].abs().max() <= 1.0
    assert torch.isfinite(out["loss"]) and "clip_loss" not in out


def test_action_mask_excludes_steps_past_the_episode_end():
    cfg = tiny_config()
    model = RoboVLM(cfg).eval()
    b = make_batch(cfg, 1)
    mask = torch.zeros_like(b["action_mask"])
    mask[:, :, 0] = True
    with torch.no_grad():
        l1 = model({**b, "action_mask": mask})["loss"]
        garbage = b["actions"].clone()
        garbage[:, :, 1:] = 5.0
        l2 = model({**b, "actions": garbage, "action_mask": mask})["loss"]
    torch.testing.assert_close(l1, l2)


def test_bad_inputs_are_clear_errors():
    cfg = tiny_config()
    model = RoboVLM(cfg).eval()
    img = torch.randn(1, 3, cfg.image_size, cfg.image_size)
    st = torch.zeros(1, cfg.state_dim)
    with pytest.raises(MissingInputError, match="non-empty string"):
        model.step(img, img, st, "   ")
    with pytest.raises(MissingInputError, match="first step needs an instruction"):
        model.step(img, img, st, None)
    model.step(img, img, st, "go")
    model.step(img, img, st)  # later steps may reuse the instruction
    with pytest.raises(ValueError, match="longer than window_size"):
        model(make_batch(cfg, 1, t=cfg.window_size + 1))
