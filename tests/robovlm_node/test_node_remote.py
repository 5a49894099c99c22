"""``engine:=remote``: the node driven by a real ``robovlm serve`` over loopback; the server hangs, then is stopped
and restarted, while the robot is driving. Count the commands, require zero while the server is away, require
motion again within 10 s of its return."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.lifecycle import TransitionCallbackReturn

from tests.ros_harness import RATE, activate, node_params, statuses
from tests.serve_harness import Server

# xdist_group: its server is a local Ray, one at a time with those of tests/robovlm/serving
pytestmark = [pytest.mark.dds, pytest.mark.slow, pytest.mark.xdist_group("ray")]
CHUNK_TIMEOUT_S = 1.0


def _remote_params(server: Server, **kw) -> dict:
    params = node_params("", engine="remote", server_url=server.url, server_token_file=str(server.token_file), **kw)
    return {**params, "server_timeout_s": 0.5, "chunk_timeout_s": CHUNK_TIMEOUT_S}


def _model_ok(h, seen: list) -> bool:
    """Whether the newest /diagnostics has the model OK; each status read is appended to ``seen``."""
    if not h.rec.diagnostics:
        return False
    seen.append(statuses(h)["model"])
    return seen[-1][0] == DiagnosticStatus.OK


def _moving_since(h, t: float) -> bool:
    return any(np.any(v != 0) for ts, v in h.commands(since=t))


def _stopped_between(h, t0: float, t1: float) -> list:
    return [(round(ts - t0, 3), v.tolist()) for ts, v in h.commands(since=t0) if ts <= t1 and np.any(v != 0)]


def test_the_robot_stops_while_the_server_is_away_and_drives_when_it_returns(checkpoint, harness_factory, tmp_path):
    server = Server(checkpoint, tmp_path)
    server.start()
    try:
        h = harness_factory(_remote_params(server))
        activate(h)
        assert h.node.supervisor.engine.name == "remote"
        h.start_feeding()
        assert h.wait_for(lambda: _moving_since(h, 0.0), 30), "no motion through the server"
        # the first steps may outlast server_timeout_s on a loaded machine (the robot is held then): wait for the
        # model's status to say OK rather than read the next one
        seen: list = []
        assert h.wait_for(lambda: _model_ok(h, seen), 30), seen[-1:]
        model = seen[-1]
        assert model[2]["server"] == server.url, model
        assert float(model[2]["server_round_trip_ms"]) >= float(model[2]["server_server_ms"]) > 0
        assert "@" in model[2]["server_replica"]

        # 1. The server hangs (every process of it stopped): steps time out, the chunk goes stale.
        pids = server.processes()
        last_ok = time.monotonic()
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        try:
            assert h.wait_for(lambda: h.node.supervisor.hold_cause() == "engine_down", 5)
            time.sleep(2.0)
            t_zero = last_ok + CHUNK_TIMEOUT_S + 2 / RATE
            moving = _stopped_between(h, t_zero, time.monotonic())
            assert not moving, f"the robot must be stopped {CHUNK_TIMEOUT_S} s after the server hung: {moving}"
            n = len(h.rec.diagnostics)
            assert h.wait_for(lambda: len(h.rec.diagnostics) > n, 5)
            level, message, _, _ = statuses(h)["model"]
            assert level == DiagnosticStatus.ERROR and server.url in message, message
        finally:
            for pid in pids:
                os.kill(pid, signal.SIGCONT)
        t_back = time.monotonic()
        assert h.wait_for(lambda: _moving_since(h, t_back), 10), "no motion within 10 s of the server waking up"

        # 2. The server is stopped, then started again on the same port.
        server.stop()
        t_down = time.monotonic()
        assert h.wait_for(lambda: h.node.supervisor.hold_cause() == "engine_down", 10)
        time.sleep(1.0)
        # the window ends when the new server process starts: it may answer steps before start() sees /healthz
        t_start = time.monotonic()
        moving = _stopped_between(h, t_down + CHUNK_TIMEOUT_S + 2 / RATE, t_start)
        assert not moving, f"moved while the server was down: {moving}"
        took = server.start()
        t_back = time.monotonic()
        assert h.wait_for(lambda: _moving_since(h, t_back), 10), f"no motion within 10 s of the restart ({took:.0f} s)"
        assert h.node.supervisor.hold_cause() is None
        assert h.node.status.snapshot().stops["engine_down"] > 0
    finally:
        server.close()


def test_an_unreachable_server_fails_configure_naming_it(harness_factory, tmp_path, capfd):
    from tests.serve_harness import free_port, write_token

    url = f"http://127.0.0.1:{free_port()}"
    write_token(tmp_path / "t")
    params = node_params("", engine="remote", server_url=url, server_token_file=str(tmp_path / "t"))
    h = harness_factory(params)
    assert h.node.trigger_configure() == TransitionCallbackReturn.FAILURE
    time.sleep(0.1)
    assert f"cannot load server {url}" in capfd.readouterr().err


def test_remote_without_a_server_url_is_refused_on_configure(harness_factory, capfd):
    h = harness_factory(node_params("", engine="remote"))
    assert h.node.trigger_configure() == TransitionCallbackReturn.FAILURE
    time.sleep(0.1)
    assert "engine 'remote' needs parameters 'server_url'" in capfd.readouterr().err
