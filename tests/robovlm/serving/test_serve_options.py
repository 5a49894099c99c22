"""``robovlm serve``'s options refused or written before any Ray starts: a readable token file, the RayService
config ``--write-config`` writes, and the HAProxy ingress where it cannot work."""

from __future__ import annotations

import subprocess
import sys

import pytest

from robovlm.serving.options import ServeError, ServeOptions
from tests.serve_harness import write_token

pytestmark = pytest.mark.slow  # the first two run `robovlm serve` as a process


def test_serve_refuses_a_readable_token_file_before_starting_ray(checkpoint, tmp_path):
    token = tmp_path / "token"
    token.write_text("abc\n")
    token.chmod(0o644)
    out = subprocess.run(
        [sys.executable, "-m", "robovlm.cli", "serve", checkpoint, "--token-file", str(token)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2 and "chmod 600" in out.stderr, out.stderr


def test_write_config_gives_an_application_ray_serve_can_build(checkpoint, tmp_path):
    import yaml
    from ray.serve import Application

    from robovlm.serving.deployment import app_builder

    write_token(tmp_path / "token")
    out = subprocess.run(
        [sys.executable, "-m", "robovlm.cli", "serve", checkpoint, "--token-file", str(tmp_path / "token")]
        + ["--replicas", "3", "--gpus-per-replica", "0.5", "--write-config", str(tmp_path / "serve.yaml")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    doc = yaml.safe_load((tmp_path / "serve.yaml").read_text())
    app = doc["applications"][0]
    assert app["import_path"] == "robovlm.serving.deployment:app_builder"
    assert app["args"]["replicas"] == 3 and app["args"]["device"] == "cuda"
    assert isinstance(app_builder(app["args"]), Application)
    # a hand-written RayService config: left-out args take robovlm serve's defaults, mistakes are named
    options = ServeOptions.from_app_args({"checkpoint": checkpoint, "token_file": str(tmp_path / "token")})
    assert options == ServeOptions(checkpoint, str(tmp_path / "token"))
    assert ServeOptions.from_app_args(options.app_args()).app_args() == options.app_args()
    with pytest.raises(ServeError, match=r"unknown application args \['max_batch'\]"):
        app_builder({**app["args"], "max_batch": 4})
    with pytest.raises(ServeError, match="token_file"):
        app_builder({"checkpoint": checkpoint})
    with pytest.raises(ServeError, match="--max-batch-size must be at least 1"):
        app_builder({**app["args"], "max_batch_size": 0})


def test_the_haproxy_ingress_is_refused_where_it_cannot_work(checkpoint, tmp_path):
    write_token(tmp_path / "token")
    token = str(tmp_path / "token")
    with pytest.raises(ServeError, match="keeps its own ingress"):
        ServeOptions(checkpoint, token, ingress="haproxy", address="127.0.0.1:6379")
    with pytest.raises(ServeError, match="--tls-cert is served by Ray's proxy"):
        ServeOptions(checkpoint, token, ingress="haproxy", tls_cert="c.pem", tls_key="k.pem")
    with pytest.raises(ServeError, match="--ingress must be one of"):
        ServeOptions(checkpoint, token, ingress="nginx")


@pytest.mark.parametrize("ingress", ["proxy", "haproxy"])
def test_the_ray_a_server_starts_gives_its_proxy_a_minute_to_start(ingress, monkeypatch):
    """Serve kills a proxy not ready in 5 s (its default), and ``serve.start`` fails: on two busy cores it is not."""
    import os

    from robovlm.serving.ingress import ingress_environment

    key = "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S"
    monkeypatch.delenv(key, raising=False)
    with ingress_environment(ingress) as applied:
        assert float(os.environ[key]) == 60.0 and key in applied
    assert key not in os.environ
    monkeypatch.setenv(key, "7")  # the user's own choice wins
    with ingress_environment(ingress) as applied:
        assert os.environ[key] == "7" and key not in applied
    assert os.environ[key] == "7"
