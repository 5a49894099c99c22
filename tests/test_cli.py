import json
from pathlib import Path

import pytest

from robovlm.cli import main
from robovlm.config import load_config
from robovlm.config_import import ImportRefused, import_robovlms_config

ROOT = Path(__file__).resolve().parents[1]
OFFICIAL = ROOT / "tests" / "data" / "robovlms_kosmos_lstm.json"


@pytest.mark.parametrize("config", sorted((ROOT / "models" / "configs").glob("*.json")), ids=lambda p: p.name)
def test_info_works_on_every_shipped_config(config, capsys):
    assert main(["info", str(config)]) == 0
    out = capsys.readouterr().out
    assert "parameters per module" in out and "tokens per stage" in out
    latents = load_config(config).vision_resampler.num_latents
    assert "patch tokens per camera" in out and f"after resampler: {latents} tokens per camera x 2" in out


def test_init_checkpoint_then_info_on_it(tmp_path, capsys):
    cfg = tmp_path / "tiny.json"
    from .conftest import tiny_config
    from robovlm.config import save_config

    save_config(tiny_config(), cfg)
    assert main(["init-checkpoint", str(cfg), str(tmp_path / "ckpt")]) == 0
    assert main(["info", str(tmp_path / "ckpt")]) == 0
    out = capsys.readouterr().out
    assert "UNTRAINED" in out and "checkpoint" in out and "per frame into the LM: 10" in out


def test_import_official_config_maps_ignores_and_writes(tmp_path, capsys):
    out_path = tmp_path / "out.json"
    assert main(["import-robovlms-config", str(OFFICIAL), str(out_path), "--backbone-path", str(tmp_path / "k2")]) == 0
    text = capsys.readouterr().out
    assert "mapped (" in text and "ignored (" in text
    assert "trainer: training infrastructure" in text and "norm_action: action normalization comes from the data" in text
    cfg = load_config(out_path)
    assert cfg.window_size == 16 and cfg.fwd_pred_next_n == 10 and cfg.use_vision_resampler
    assert cfg.vision_resampler.depth == 8 and cfg.vision_resampler.vis_dim == 1024
    assert cfg.act_head.type == "lstm" and cfg.act_head.hidden_size == 1024 and cfg.action_dim == 7
    assert cfg.backbone.type == "kosmos2" and cfg.backbone.path == str((tmp_path / "k2").resolve())
    src = json.loads(OFFICIAL.read_text())
    _, report = import_robovlms_config(src, backbone_path="/x")
    seen = {k.split(".")[0] for k, _ in report.mapped + report.ignored} | {"model", "vlm"}
    assert set(src) <= seen  # every top-level key is accounted for


@pytest.mark.parametrize("patch, needle", [
    ({"model": "llava", "vlm": {"name": "llava"}}, "backbone 'llava' is not supported"),
    ({"act_head": {"type": "LSTMDecoder", "action_space": "discrete"}}, "act_head.action_space"),
    ({"act_head": {"type": "FCDecoder", "history_type": "pre"}}, "act_head.history_type"),
    ({"train_setup": {"predict_caption": True}}, "caption head"),
    ({"use_clip_norm": True}, "--clip-path"),
    ({"use_mim_obs_loss": True}, "use_mim_obs_loss"),
])
def test_import_refuses_unsupported_model_changes(patch, needle):
    src = {**json.loads(OFFICIAL.read_text()), **patch}
    with pytest.raises(ImportRefused, match=needle):
        import_robovlms_config(src, backbone_path="/x")


def test_import_cli_reports_refusal(tmp_path, capsys):
    src = {**json.loads(OFFICIAL.read_text()), "fwd_head": {"type": "GPTDecoder"}}
    (tmp_path / "in.json").write_text(json.dumps(src))
    assert main(["import-robovlms-config", str(tmp_path / "in.json"), str(tmp_path / "o.json")]) == 2
    err = capsys.readouterr().err
    assert "fwd_head" in err and not (tmp_path / "o.json").exists()


def test_demo_runs_the_real_path(tmp_path, capsys):
    from .conftest import tiny_config
    from robovlm.config import save_config

    save_config(tiny_config(), tmp_path / "tiny.json")
    assert main(["demo", "--config", str(tmp_path / "tiny.json"), "--steps", "5"]) == 0
    out = capsys.readouterr().out
    assert "UNTRAINED" in out and "perceiver resampler" in out and "last action chunk" in out


def test_bad_config_is_a_clean_error(tmp_path, capsys):
    (tmp_path / "c.json").write_text(json.dumps({"windw_size": 3}))
    assert main(["info", str(tmp_path / "c.json")]) == 2
    assert "did you mean 'window_size'" in capsys.readouterr().err
