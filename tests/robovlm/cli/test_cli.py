import json
import subprocess
import sys

import pytest

from robovlm.cli import main
from robovlm.configs.model import load_config
from robovlm.configs.robovlms import ImportRefused, import_robovlms_config
from tests import ROOT

ROBOVLMS = ROOT / "tests" / "data" / "robovlms" / "configs"  # the layout of RoboVLMs' configs/ folder
OFFICIAL = ROBOVLMS / "calvin_finetune" / "finetune_kosmos_cont-lstm-post_full-ft_text_vision_wd-0_ws-8_act-10.json"
PALIGEMMA = ROBOVLMS / "calvin_finetune" / "finetune_paligemma_cont-lstm-post_full-ft_text_vision_wd=0_ws-8_act-10.json"
CHILD = ROBOVLMS / "my_robot" / "kosmos_lora_mobile_base.json"


@pytest.mark.parametrize("config", sorted((ROOT / "models" / "configs").glob("*.json")), ids=lambda p: p.name)
def test_info_works_on_every_shipped_config(config, capsys):
    assert main(["info", str(config)]) == 0
    out = capsys.readouterr().out
    assert "parameters per module" in out and "tokens per stage" in out
    cfg = load_config(config)
    cams = 2 if cfg.use_hand_rgb else 1
    assert "patch tokens per camera" in out
    assert f"after resampler: {cfg.vision_resampler.num_latents} tokens per camera x {cams}" in out


def test_init_checkpoint_then_info_on_it(tmp_path, capsys):
    cfg = tmp_path / "tiny.json"
    from robovlm.configs.model import save_config
    from tests.conftest import tiny_config

    save_config(tiny_config(), cfg)
    assert main(["init-checkpoint", str(cfg), str(tmp_path / "ckpt")]) == 0
    assert main(["info", str(tmp_path / "ckpt")]) == 0
    out = capsys.readouterr().out
    assert "UNTRAINED" in out and "checkpoint" in out and "per frame into the LM: 10" in out


def test_import_official_config_maps_ignores_and_writes(tmp_path, capsys):
    out_path = tmp_path / "out" / "imported.json"  # a directory that does not exist yet (docs/model.md's out/)
    assert main(["import-robovlms-config", str(OFFICIAL), str(out_path), "--backbone-path", str(tmp_path / "k2")]) == 0
    text = capsys.readouterr().out
    assert "mapped (" in text and "ignored (" in text
    assert (
        "trainer: training infrastructure" in text and "norm_action: action normalization comes from the data" in text
    )
    assert "--lr 2e-05 --weight-decay 0 --batch-size 4 --warmup-steps 0 --seed 123" in text
    cfg = load_config(out_path)
    assert cfg.window_size == 8 and cfg.fwd_pred_next_n == 10
    # RoboVLMs' defaults for what the config leaves out or turns off: no state token, no resampler, no hand camera
    assert not cfg.use_vision_resampler and not cfg.use_state and not cfg.use_hand_rgb
    assert cfg.act_head.type == "lstm" and cfg.act_head.hidden_size == 1024 and cfg.action_dim == 7
    assert cfg.backbone.type == "kosmos2" and cfg.backbone.path == str((tmp_path / "k2").resolve())
    assert cfg.backbone.prompt == "<grounding>An image of a robot {instruction}"
    assert cfg.image_mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))
    assert cfg.train_setup.lora is None and not cfg.train_setup.freeze_language
    src = json.loads(OFFICIAL.read_text())
    _, report = import_robovlms_config(src, backbone_path="/x")
    seen = {k.split(".")[0].split(" ")[0] for k, _ in report.mapped + report.ignored} | {"model", "vlm"}
    assert set(src) <= seen  # every top-level key is accounted for


def test_import_paligemma_takes_its_processor_normalization():
    cfg, report = import_robovlms_config(json.loads(PALIGEMMA.read_text()), backbone_path="/x")
    assert cfg.backbone.type == "paligemma" and cfg.image_mean == (0.5, 0.5, 0.5) and cfg.image_std == (0.5, 0.5, 0.5)
    assert "<grounding>" not in cfg.backbone.prompt
    assert any(k == "image_mean" and "0.5" in why for k, why in report.ignored)


def test_import_resolves_parent_and_maps_train_setup(tmp_path, capsys):
    from robovlm.configs.robovlms import load_robovlms_config

    src = load_robovlms_config(CHILD)
    assert src["window_size"] == 8 and src["train_setup"]["lora_dropout"] == 0.05  # from the parent, merged
    out_path = tmp_path / "child.json"
    assert main(["import-robovlms-config", str(CHILD), str(out_path), "--backbone-path", "/x"]) == 0
    text = capsys.readouterr().out
    assert "--lr 0.0001 --weight-decay 0 --batch-size 8" in text
    cfg = load_config(out_path)
    assert cfg.use_hand_rgb and cfg.use_vision_resampler and cfg.action_dim == 3
    ts = cfg.train_setup
    assert ts.freeze_language and ts.freeze_vision and ts.gradient_checkpointing
    assert (ts.lora.r, ts.lora.alpha, ts.lora.dropout) == (16, 32, 0.05)


def test_import_parent_errors_are_named(tmp_path):
    from robovlm.configs.model import ConfigError
    from robovlm.configs.robovlms import load_robovlms_config

    (tmp_path / "a.json").write_text(json.dumps({"parent": "b.json"}))
    (tmp_path / "b.json").write_text(json.dumps({"parent": "a.json"}))
    with pytest.raises(ConfigError, match="loops"):
        load_robovlms_config(tmp_path / "a.json")
    (tmp_path / "c.json").write_text(json.dumps({"parent": "configs/missing.json"}))
    with pytest.raises(ConfigError, match="parent 'configs/missing.json' not found"):
        load_robovlms_config(tmp_path / "c.json")


@pytest.mark.parametrize(
    "patch, needle",
    [
        ({"model": "llava", "vlm": {"name": "llava"}}, "backbone 'llava' is not supported"),
        ({"act_head": {"type": "LSTMDecoder", "action_space": "discrete"}}, "act_head.action_space"),
        ({"act_head": {"type": "FCDecoder", "history_type": "pre"}}, "act_head.history_type"),
        ({"train_setup": {"predict_caption": True}}, "caption head"),
        ({"use_clip_norm": True}, "--clip-path"),
        ({"use_mim_obs_loss": True}, "use_mim_obs_loss"),
    ],
)
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
    from robovlm.configs.model import save_config
    from tests.conftest import tiny_config

    save_config(tiny_config(), tmp_path / "tiny.json")
    assert main(["demo", "--config", str(tmp_path / "tiny.json"), "--steps", "5"]) == 0
    out = capsys.readouterr().out
    assert "UNTRAINED" in out and "perceiver resampler" in out and "last action chunk" in out


def test_bad_config_is_a_clean_error(tmp_path, capsys):
    (tmp_path / "c.json").write_text(json.dumps({"windw_size": 3}))
    assert main(["info", str(tmp_path / "c.json")]) == 2
    assert "did you mean 'window_size'" in capsys.readouterr().err


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.replace("\r", "\n").splitlines() if "error:" in line or "Traceback" in line]
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in err, err
    return lines[0]


def test_careless_cli_inputs_are_one_clear_line(tmp_path, capsys):
    (tmp_path / "existing").write_text("")
    assert main(["init-checkpoint", str(ROOT / "models" / "configs" / "demo.json"), str(tmp_path / "existing")]) == 2
    assert "exists and is not a directory" in _one_error_line(capsys)
    (tmp_path / "latin1.json").write_bytes(b'\xff\xfe{"a": 1}')
    assert main(["import-robovlms-config", str(tmp_path / "latin1.json"), str(tmp_path / "out.json")]) == 2
    assert "not a UTF-8 text file" in _one_error_line(capsys)
    with pytest.raises(SystemExit) as exit_:
        main(["collect-sim", str(tmp_path / "sim"), "--episodes-per-scenario", "-1"])
    assert exit_.value.code == 2 and "must be at least 1, got -1" in capsys.readouterr().err
    assert not (tmp_path / "sim").exists()


@pytest.mark.slow
def test_training_on_a_file_damaged_mid_way_is_one_line_and_leaves_no_output(tmp_path, capsys):
    """The frames of one episode are garbage half way through (a disk error, a copy cut short and patched): the
    index reads fine, the loader meets the damage in a worker process during training."""
    from robovlm.sim.collect import collect

    data = tmp_path / "data"
    collect(data, episodes_per_scenario=1, image_size=56, noise=0.05)
    victim = sorted(data.glob("*.h5"))[0]
    raw = bytearray(victim.read_bytes())
    raw[len(raw) // 7 : len(raw) // 7 * 3] = bytes(len(raw) // 7 * 2)  # the gzip chunks of the camera frames
    victim.write_bytes(bytes(raw))
    out = tmp_path / "ck"
    code = main(
        [
            "train",
            str(ROOT / "models" / "configs" / "demo.json"),
            "--data",
            str(data),
            "--out",
            str(out),
            "--steps",
            "30",
            "--batch-size",
            "16",
            "--eval-every",
            "30",
        ]
    )
    assert code == 2
    line = _one_error_line(capsys)
    assert victim.name in line and "damaged" in line, line
    assert not out.exists(), "a failed run must leave no empty output directory"


_NO_ROS = """
import sys


class NoRos:
    def find_spec(self, name, path=None, target=None):
        if name == "rclpy" or name.startswith(("rclpy.", "robovlm_node.tools.replay")):
            raise ImportError(f"no module named {name!r} (ROS hidden by the test)")
        return None


sys.meta_path.insert(0, NoRos())
"""


@pytest.mark.parametrize("ros", [True, False], ids=["with-ros", "without-ros"])
def test_robovlm_help_lists_replay_only_with_ros_and_never_imports_it(ros):
    import subprocess
    import sys

    code = ("" if ros else _NO_ROS) + (
        "\nimport argparse, sys\nfrom robovlm.cli import build_parser\nparser = build_parser()\nparser.format_help()\n"
        "sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))\n"
        "print('replay' in sub.choices, 'rclpy' in sys.modules, 'torch' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    listed, rclpy_loaded, torch_loaded = proc.stdout.split()
    assert listed == str(ros), "replay must be listed exactly when ROS is installed"
    assert rclpy_loaded == "False" and torch_loaded == "False", "--help must not import ROS or torch"


def test_a_listing_piped_into_head_ends_quietly():
    """``robovlm inspect-dataset DIR | head``: the closed pipe is the reader's choice, not an error."""
    fixture = ROOT / "tests" / "data" / "lerobot" / "made_by_lerobot"
    code = f"from robovlm.cli import main; raise SystemExit(main(['inspect-dataset', {str(fixture)!r}]))"
    proc = subprocess.Popen([sys.executable, "-u", "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.readline()  # `head -1`
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0 and "error" not in err.lower(), err
