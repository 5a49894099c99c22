import json

import pytest

from robovlm.configs.model import ConfigError, RoboVLMConfig, load_config, save_config
from tests.conftest import tiny_config


def test_defaults_are_valid_and_round_trip(tmp_path):
    cfg = tiny_config(use_claw_matrix=True)
    save_config(cfg, tmp_path / "c.json")
    again = load_config(tmp_path / "c.json")
    assert again == cfg
    assert RoboVLMConfig().action_dim == 2
    assert RoboVLMConfig().clip_norm_ratio == 0.05


@pytest.mark.parametrize(
    "data, needle",
    [
        ({"window_sise": 8}, "did you mean 'window_size'"),
        ({"vision_resampler": {"dept": 3}}, "did you mean 'vision_resampler.depth'"),
        ({"act_head": {"hiden_size": 3}}, "did you mean 'act_head.hidden_size'"),
        ({"use_claw_matrx": True}, "did you mean 'use_claw_matrix'"),
    ],
)
def test_unknown_key_names_it_and_the_closest_valid_key(data, needle):
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(")):
        RoboVLMConfig.from_dict(data)


@pytest.mark.parametrize(
    "data, needle",
    [
        ({"window_size": 0}, "window_size: must be a positive integer, got 0"),
        ({"window_size": True}, "window_size"),
        ({"act_head": {"type": "rnn"}}, "act_head.type: must be one of"),
        ({"missing_hand": "ignore"}, "missing_hand"),
        ({"clip_norm_ratio": -1}, "clip_norm_ratio"),
        ({"vision_resampler": {"heads": 0}}, "vision_resampler.heads"),
        ({"image_std": [1, 0, 1]}, "image_std"),
        ({"use_state": "yes"}, "use_state: must be true or false"),
        ({"backbone": {"type": "llava", "config": {}}}, "backbone.type"),
        ({"backbone": {"type": "kosmos2", "path": "/x", "config": {}}}, "exactly one of"),
        ({"backbone": {"type": "kosmos2", "config": {}, "tokenizer": "auto"}}, "backbone.tokenizer"),
        ({"backbone": {"type": "kosmos2", "config": {}, "tokenizer": "bytes", "prompt": "no slot"}}, "backbone.prompt"),
        ({"use_clip_norm": True}, "clip_text"),
        ({"act_head": {"type": "gpt", "hidden_size": 30, "num_heads": 4}}, "divisible"),
    ],
)
def test_bad_values_name_the_field_and_value(data, needle):
    with pytest.raises(ConfigError, match=needle):
        RoboVLMConfig.from_dict(data)


def test_load_config_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="bad.json: not valid JSON"):
        load_config(bad)
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"fwd_pred_nxt_n": 3}))
    with pytest.raises(ConfigError, match="wrong.json: unknown key 'fwd_pred_nxt_n'; did you mean 'fwd_pred_next_n'"):
        load_config(wrong)


def test_relative_weight_paths_resolve_against_the_config_file(tmp_path):
    (tmp_path / "configs").mkdir()
    f = tmp_path / "configs" / "c.json"
    f.write_text(json.dumps({"backbone": {"type": "kosmos2", "path": "../weights"}}))
    assert load_config(f).backbone.path == str((tmp_path / "weights").resolve())
