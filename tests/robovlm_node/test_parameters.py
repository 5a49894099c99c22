"""Typed, ranged parameters: a bad value is refused when it is set, naming it; unknown overrides are reported."""

import os
import subprocess

import pytest
import rclpy
import yaml
from rclpy.context import Context
from rclpy.parameter import Parameter

from robovlm_node.node import RoboVLMNode
from robovlm_node.parameters import (
    PARAMETERS,
    ParameterError,
    coerce,
    read_parameters,
    unknown_overrides,
    validate_settings,
)
from tests import ROOT
from tests.ros_harness import node_command

pytestmark = pytest.mark.dds


@pytest.fixture
def make_node():
    made = []

    def make(**params):
        ctx = Context()
        rclpy.init(context=ctx, args=[])
        made.append((ctx, None))
        node = RoboVLMNode(context=ctx, parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
        made[-1] = (ctx, node)
        return node

    yield make
    for ctx, node in made:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown(context=ctx)


def test_every_parameter_is_statically_typed_with_a_description():
    for name, spec in PARAMETERS.items():
        assert spec.type != Parameter.Type.NOT_SET and spec.description, name
        if spec.one_of is not None:
            assert spec.type == Parameter.Type.STRING and spec.default in spec.one_of, name
    numeric = [n for n, s in PARAMETERS.items() if s.type in (Parameter.Type.DOUBLE, Parameter.Type.INTEGER)]
    assert all(PARAMETERS[n].range is not None for n in numeric), "every scalar number has a range"
    assert [n for n, s in PARAMETERS.items() if not s.read_only] == ["instruction"]


@pytest.mark.parametrize(
    "params, needle",
    [
        ({"control_rate_hz": "fast"}, "parameter 'control_rate_hz' must be a number, got 'fast'"),
        ({"control_rate_hz": -1.0}, "parameter 'control_rate_hz' must be in [0.1, 1000.0], got -1.0"),
        ({"input_timeout_s": "fast"}, "parameter 'input_timeout_s' must be a number"),
        ({"control_rt_priority": 150}, "parameter 'control_rt_priority' must be in [0, 99], got 150"),
        ({"stamped": "yes"}, "parameter 'stamped' must be true or false"),
        ({"max_velocity": ["a"]}, "parameter 'max_velocity' must be a list of numbers"),
        ({"device": "tpu"}, "parameter 'device' must be one of ['cpu', 'cuda'], got 'tpu'"),
        (
            {"engine": "tensorrt"},
            "parameter 'engine' must be one of ['torch', 'onnxruntime', 'remote'], got 'tensorrt'",
        ),
        ({"dtype": "int8"}, "parameter 'dtype' must be one of ['float32', 'bfloat16', 'float16'], got 'int8'"),
        ({"chunk_mode": "bogus"}, "parameter 'chunk_mode' must be one of"),
        ({"jpeg_quality": 101}, "parameter 'jpeg_quality' must be in [0, 100], got 101"),
    ],
)
def test_bad_start_up_values_are_refused_naming_the_parameter(make_node, params, needle):
    with pytest.raises(ParameterError) as err:
        make_node(model_path="/x", **params)
    assert needle in str(err.value)


@pytest.mark.parametrize(
    "params, needle",
    [
        ({"engine": "remote"}, "engine 'remote' needs parameters 'server_url'"),
        (
            {"engine": "remote", "server_url": "http://gpu:8000", "server_token_file": "/t", "dtype": "float16"},
            "'dtype' and 'onnx_tensorrt' are the server's choice",
        ),
        ({"engine": "torch"}, "parameter 'model_path' is empty"),
    ],
)
def test_the_remote_engine_needs_a_server_and_no_model_path(params, needle):
    raw = {k: spec.default for k, spec in PARAMETERS.items()}
    with pytest.raises(ParameterError, match=needle):
        validate_settings({**raw, **params})
    ok = validate_settings({**raw, "engine": "remote", "server_url": "http://gpu:8000", "server_token_file": "/t"})
    assert ok.model_path == "" and ok.server_timeout_s == 1.0 and ok.jpeg_quality == 0


def test_integers_are_taken_for_floats_and_lists_keep_their_type(make_node):
    node = make_node(model_path="/x", control_rate_hz=50, max_velocity=[1, 2])
    assert node.get_parameter("control_rate_hz").value == 50.0
    assert list(node.get_parameter("max_velocity").value) == [1.0, 2.0]
    assert read_parameters(node)["state_joints"] == []  # unset list: the checkpoint's joint names


def test_runtime_sets_respect_type_range_and_read_only(make_node):
    node = make_node(model_path="/x")
    bad_type, read_only = node.set_parameters(
        [Parameter("instruction", value=3), Parameter("control_rate_hz", value=30.0)]
    )
    assert not bad_type.successful and "type" in bad_type.reason.lower()
    assert not read_only.successful and "control_rate_hz" in read_only.reason
    ok = node.set_parameters([Parameter("instruction", value="go left")])[0]
    assert ok.successful and node.get_parameter("instruction").value == "go left"


def test_unknown_overrides_are_reported_with_the_closest_name(make_node):
    node = make_node(model_path="/x", control_rate=50.0, use_sim_time=False)
    lines = unknown_overrides(node)
    assert lines == [
        "parameter override 'control_rate' matches no parameter of this node and is ignored; "
        "did you mean 'control_rate_hz'?"
    ]


def test_the_shipped_yaml_needs_no_placeholders():
    params = yaml.safe_load((ROOT / "config" / "robovlm.yaml").read_text())["/**"]["ros__parameters"]
    for name, value in params.items():
        coerce(name, PARAMETERS[name], value)  # raises on a placeholder such as [""] for a list of names


def test_the_console_script_refuses_a_bad_value_and_warns_about_an_unknown_one(tmp_path):
    env = {**os.environ, "ROS_DOMAIN_ID": os.environ.get("ROS_DOMAIN_ID", "7")}
    proc = subprocess.run(
        node_command("model_path:=/x", "control_rate_hz:=fast"),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "parameter 'control_rate_hz' must be a number, got 'fast'" in proc.stderr + proc.stdout
    proc = subprocess.Popen(
        node_command("model_path:=/x", "control_rate:=50.0"),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        line = ""
        for line in proc.stdout:
            if "control_rate" in line:
                break
        assert "did you mean 'control_rate_hz'?" in line
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_the_parameter_reference_and_the_shipped_yaml_come_from_the_one_table():
    from robovlm_node.parameters import reference_markdown

    assert (ROOT / "docs" / "parameters.md").read_text() == reference_markdown(), (
        "docs/parameters.md is out of date: python -m robovlm_node.parameters > docs/parameters.md"
    )
    params = yaml.safe_load((ROOT / "config" / "robovlm.yaml").read_text())["/**"]["ros__parameters"]
    unknown = sorted(set(params) - set(PARAMETERS) - {"use_sim_time"})
    assert not unknown, f"config/robovlm.yaml sets parameters the node does not declare: {unknown}"
