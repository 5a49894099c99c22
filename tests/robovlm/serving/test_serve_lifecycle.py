"""Tests that start their own ``robovlm serve`` (a local Ray each, one at a time): the ONNX Runtime engine on a server
lost and restarted, a killed replica, a cluster the server joins, and the HAProxy ingress. In a module of their
own so that test_serve.py's shared server is stopped before they start."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from robovlm.export.exporter import streaming_inputs
from robovlm.runtime.engine import EngineUnavailable
from robovlm.runtime.factory import build_engine, build_remote_engine
from robovlm.runtime.wire import decode_info
from robovlm.serving.ingress import startup_environment
from tests.serve_harness import Server, free_port

# xdist_group: one local Ray at a time (with test_serve.py's and test_node_remote.py's)
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ray")]


def _robot(server: Server):
    return build_remote_engine(server.url, token_file=str(server.token_file), timeout_s=10.0)


def test_the_onnxruntime_engine_serves_the_same_actions_and_a_lost_server_holds_the_robot_until_it_returns(
    checkpoint, tmp_path
):
    """The server on an ONNX export (``--engine onnxruntime``) gives the local ONNX Runtime engine's actions. Then it
    is stopped mid-run: steps raise ``EngineUnavailable`` (with a growing retry delay), never hang; after a restart on
    the same port the same engine drives again, and a SIGTERM leaves no process behind. (One test: each server start
    is a local Ray's, the slowest thing in the suite.)"""
    from robovlm.export.exporter import export_checkpoint

    export_checkpoint(checkpoint, tmp_path / "onnx", parity_steps=2)
    s = Server(tmp_path / "onnx", tmp_path, args=("--engine", "onnxruntime"))
    s.start()
    try:
        parity = _robot(s)
        assert decode_info(s.request("GET", "/v1/info")[1])["engine"] == "onnxruntime"
        local = build_engine("onnxruntime", tmp_path / "onnx")
        worst = max(
            float(np.abs(parity.step(h, hd, st, i) - local.step(h, hd, st, i)).max())
            for h, hd, st, i in streaming_inputs(parity.config, 12)
        )
        assert worst <= 1e-4, worst

        robot = build_remote_engine(s.url, token_file=str(s.token_file), timeout_s=2.0)
        inputs = [(h, hand, st, "go to the cup") for h, hand, st, _ in streaming_inputs(robot.config, 4)]
        for head, hand, state, instruction in inputs:
            robot.step(head, hand, state, instruction)
        assert len(robot.stream.window) == 3
        assert len(s.processes()) >= 4  # the server, Ray's GCS and raylet, the proxy, the replica, ...: all marked
        assert s.stop() == 0 and s.processes() == [], "SIGTERM must end the server and the Ray it started"
        delays = []
        t0 = time.monotonic()
        while len(delays) < 3 and time.monotonic() - t0 < 30:
            try:
                robot.step(*inputs[0])
            except EngineUnavailable as exc:
                delays.append(exc.retry_after_s)
                time.sleep(exc.retry_after_s)
        assert len(delays) == 3 and delays[0] < delays[1] < delays[2], delays
        assert time.monotonic() - t0 < 10, "a lost server must answer at once, not hang the inference loop"
        assert len(robot.stream.window) == 0  # the stream starts over after the gap
        up = s.start()
        t_back = time.monotonic()
        while True:
            try:
                robot.step(*inputs[0])
                break
            except EngineUnavailable as exc:
                assert time.monotonic() - t_back < 10, f"no step within 10 s of the server's return ({up:.0f} s)"
                time.sleep(exc.retry_after_s)
    finally:
        s.close()


def test_one_of_two_replicas_killed_the_robots_keep_driving(checkpoint, tmp_path):
    s = Server(checkpoint, tmp_path, args=("--replicas", "2"))
    s.start()
    try:
        robots = [build_remote_engine(s.url, token_file=str(s.token_file), timeout_s=5.0) for _ in range(2)]
        inputs = list(streaming_inputs(robots[0].config, 8))
        replicas: set[str] = set()
        t0 = time.monotonic()
        while len(replicas) < 2 and time.monotonic() - t0 < 60:
            for r in robots:
                r.step(*inputs[0])
                replicas.add(r.timing.replica)
        assert len(replicas) == 2, replicas
        victim = int(sorted(replicas)[0].rsplit(":", 1)[1])
        failures, steps = [0, 0], [0, 0]
        stop = threading.Event()

        def drive(k: int) -> None:
            i = 0
            while not stop.is_set():
                try:
                    robots[k].step(*inputs[i % len(inputs)])
                    steps[k] += 1
                except EngineUnavailable as exc:
                    failures[k] += 1
                    time.sleep(exc.retry_after_s)
                i += 1

        threads = [threading.Thread(target=drive, args=(k,), daemon=True) for k in range(2)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        before = list(steps)
        os.kill(victim, signal.SIGKILL)
        time.sleep(4.0)
        stop.set()
        for t in threads:
            t.join(30)
        assert all(f <= 2 for f in failures), f"failed steps per robot: {failures}"
        assert all(after - b >= 5 for after, b in zip(steps, before)), (before, steps)
    finally:
        s.close()


CLUSTER_STATUS = r"""
import json, sys
import ray
from ray import serve
ray.init(address=sys.argv[1], configure_logging=False, log_to_driver=False)
print(json.dumps(sorted(serve.status().applications)))
"""


def test_a_server_joins_an_existing_cluster_and_leaves_it_running(checkpoint, tmp_path, monkeypatch):
    """``--address``: the application runs on a Ray cluster the server did not start (here one `ray start --head`
    on loopback, which checks a token); without the token the server says what is missing; with it, SIGTERM
    removes the application and leaves the cluster to its owner."""

    cluster = Server(checkpoint, tmp_path / "cluster")  # only for its mark: every process of the cluster carries it
    gcs = f"127.0.0.1:{free_port()}"
    token = uuid.uuid4().hex + uuid.uuid4().hex  # the cluster's own token: nothing read from or left in ~/.ray
    env = {**os.environ, "ROBOVLM_TEST_SERVER": cluster.mark, "RAY_USAGE_STATS_ENABLED": "0"}
    env |= {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    env |= startup_environment()  # as docs/serving.md asks of a cluster the server joins
    ray = [sys.executable, "-m", "ray.scripts.scripts"]
    head = [*ray, "start", "--head", f"--port={gcs.split(':')[1]}", "--node-ip-address=127.0.0.1", "--num-cpus=2"]
    temp = f"/tmp/ray-{uuid.uuid4().hex[:8]}"  # short: Ray's socket paths must fit 107 characters
    head += ["--include-dashboard=false", f"--temp-dir={temp}"]
    subprocess.run(head, env=env, check=True, capture_output=True, timeout=120)
    s = Server(checkpoint, tmp_path, args=("--address", gcs))
    try:
        monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
        monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
        with pytest.raises(RuntimeError, match="RAY_AUTH_MODE=token"):
            s.start()
        monkeypatch.setenv("RAY_AUTH_MODE", "token")  # as Ray's docs have its users do
        monkeypatch.setenv("RAY_AUTH_TOKEN", token)
        s = Server(checkpoint, tmp_path, args=("--address", gcs))
        s.start()
        robot = _robot(s)
        for head_frame, hand, state, instruction in streaming_inputs(robot.config, 2):
            assert robot.step(head_frame, hand, state, instruction).shape[-1] == robot.config.action_dim
        assert s.stop() == 0 and s.processes() == []
        status = subprocess.run(
            [sys.executable, "-c", CLUSTER_STATUS, gcs], env=env, capture_output=True, text=True, timeout=120
        )
        assert status.returncode == 0, status.stderr[-2000:]  # the cluster is still there
        assert "robovlm" not in json.loads(status.stdout.strip().splitlines()[-1]), "the application is removed"
    finally:
        s.close()
        cluster.close()  # the cluster's processes, by their mark
        shutil.rmtree(temp, ignore_errors=True)


def _listening(pids: list[int]) -> dict[int, set[tuple[str, int]]]:
    """pid -> the (IPv4 address, port) its TCP sockets listen on, from /proc."""
    inodes = {}
    for line in open("/proc/net/tcp").read().splitlines()[1:]:
        f = line.split()
        if f[3] == "0A":  # LISTEN
            addr, port = f[1].split(":")
            ip = ".".join(str(int(addr[i : i + 2], 16)) for i in (6, 4, 2, 0))
            inodes[f[9]] = (ip, int(port, 16))
    out: dict[int, set[tuple[str, int]]] = {}
    for pid in pids:
        try:
            links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:
            continue
        out[pid] = {inodes[x[8:-1]] for x in links if x.startswith("socket:[") and x[8:-1] in inodes}
    return out


def test_the_haproxy_ingress_serves_the_same_actions_on_loopback_and_leaves_nothing_behind(checkpoint, tmp_path):
    """``--ingress haproxy``: HAProxy takes the robots' requests on the server's address and hands them to the
    replica's own HTTP server on loopback; the actions are the local engine's, a malformed step gets 400 and the
    next one is served; SIGTERM stops HAProxy and removes its files. Its stats and metrics listeners are on every
    interface (Ray's HAProxy configuration has no address for them), on ports the server logs."""
    s = Server(checkpoint, tmp_path, args=("--ingress", "haproxy"))
    s.start()
    try:
        haproxy = [p for p in s.processes() if b"haproxy" in open(f"/proc/{p}/cmdline", "rb").read().split(b"\0")[0]]
        assert haproxy, "no HAProxy process among the server's"
        config = next(a for a in open(f"/proc/{haproxy[0]}/cmdline", "rb").read().split(b"\0") if a.endswith(b".cfg"))
        state_dir = Path(config.decode()).parents[1]
        assert state_dir.is_dir() and state_dir.stat().st_mode & 0o077 == 0
        listeners = _listening(s.processes())
        assert ("127.0.0.1", s.port) in listeners[haproxy[0]]
        stats = re.search(r"stats on port (\d+), Prometheus metrics on port (\d+)", s.tail(400))
        assert stats, s.tail()
        assert {("0.0.0.0", int(stats[1])), ("0.0.0.0", int(stats[2]))} <= listeners[haproxy[0]]
        replica = [p for p in listeners if open(f"/proc/{p}/cmdline", "rb").read().startswith(b"ray::ServeReplica")]
        direct = {sock for p in replica for sock in listeners[p] if 30000 <= sock[1] <= 31000}  # Ray's port range
        assert direct and {ip for ip, _ in direct} == {"127.0.0.1"}, direct
        robot = _robot(s)
        local = build_engine("torch", checkpoint)
        worst = max(
            float(np.abs(robot.step(h, hd, st, i) - local.step(h, hd, st, i)).max())
            for h, hd, st, i in streaming_inputs(robot.config, 12)
        )
        assert worst <= 1e-4, worst
        assert robot.timing.replica and robot.timing.round_trip_ms > 0
        assert s.request("POST", "/v1/step", b"\x93not a step")[0] == 400
        assert s.request("POST", "/v1/step", b"x" * (5 * 2**20))[0] == 413
        h, hd, st, i = next(iter(streaming_inputs(robot.config, 1)))
        assert robot.step(h, hd, st, i).shape == (robot.config.fwd_pred_next_n, robot.config.action_dim)
        assert s.stop() == 0
        assert not s.processes(), "processes left behind"
        assert not state_dir.exists()
    finally:
        s.close()
