"""One ``robovlm serve`` on a real local Ray Serve (loopback), shared by the tests that only talk to it, driven by
``RemoteEngine`` as the node drives it: parity, batching across robots, the protocol's refusals, the token and size
limits. The tests that start, kill or restart a server of their own are in test_serve_lifecycle.py."""

from __future__ import annotations

import json
import os
import threading
import time

import msgpack
import numpy as np
import pytest

from robovlm.export.exporter import streaming_inputs
from robovlm.runtime.engine import EngineError
from robovlm.runtime.factory import build_engine, build_remote_engine
from robovlm.runtime.wire import decode_info
from robovlm.utils.images import resize_rgb
from tests.serve_harness import Server, write_token

# xdist_group: one local Ray at a time (test_node_remote.py's server is in the group too)
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ray")]


@pytest.fixture(scope="module")
def server(checkpoint, tmp_path_factory):
    """One replica, batches of up to 8 that wait 20 ms to fill (so concurrent robots share batches)."""
    s = Server(checkpoint, tmp_path_factory.mktemp("serve"), args=("--batch-wait-ms", "20", "--max-request-mb", "1"))
    s.start()
    yield s
    s.close()


def _robot(server: Server, **kw):
    return build_remote_engine(server.url, token_file=str(server.token_file), timeout_s=10.0, **kw)


def test_health_needs_no_token_and_everything_else_does(server):
    status, body = server.request("GET", "/healthz", token=None)
    assert status == 200 and json.loads(body)["status"] == "ok"
    assert server.request("GET", "/v1/info", token=None)[0] == 401
    assert server.request("GET", "/v1/info", token="wrong")[0] == 401
    assert server.request("POST", "/v1/step", b"x", token="wrong")[0] == 401
    status, body = server.request("GET", "/v1/info")
    info = decode_info(body)
    assert status == 200 and info["config"]["window_size"] == 4 and info["max_request_bytes"] == 2**20
    assert server.request("GET", "/nothing")[0] == 404
    # the replica and Serve's processes at the server's own priority, not Ray's default nice 15 for its workers
    nice = {}
    for pid in server.processes():
        try:
            nice[pid] = os.getpriority(os.PRIO_PROCESS, pid)
        except ProcessLookupError:  # a short-lived helper that ended since it was listed
            continue
    assert len(nice) > 3 and set(nice.values()) == {0}, nice


def test_remote_actions_equal_the_local_engine_while_another_robot_shares_the_batches(server, checkpoint):
    """24 steps with an instruction change and a missing hand frame every fifth step; a second robot steps all
    the while with its own instruction, so steps are batched across robots."""
    local = build_engine("torch", checkpoint)
    robot, other = _robot(server, robot="a"), _robot(server, robot="b")
    done = threading.Event()

    def drive_other() -> None:
        inputs = list(streaming_inputs(other.config, 8, seed=5))
        i = 0
        while not done.is_set():
            head, hand, state, _ = inputs[i % len(inputs)]
            other.step(head, hand, state, "turn around and wait by the door")
            i += 1

    thread = threading.Thread(target=drive_other, daemon=True)
    thread.start()
    worst, batched = 0.0, 0
    try:
        for head, hand, state, instruction in streaming_inputs(robot.config, 24):
            expected = local.step(head, hand, state, instruction)
            worst = max(worst, float(np.abs(robot.step(head, hand, state, instruction) - expected).max()))
            batched += robot.timing.batch_size > 1
            assert robot.timing.round_trip_ms >= robot.timing.server_ms > robot.timing.read_ms >= 0
    finally:
        done.set()
        thread.join(30)
    assert worst <= 1e-4, worst
    assert batched >= 3, f"only {batched} of 24 steps were batched with the other robot's"
    jpeg = _robot(server, jpeg_quality=90)
    local.reset()
    diffs = [
        float(np.abs(jpeg.step(h, hd, s, i) - local.step(h, hd, s, i)).max())
        for h, hd, s, i in streaming_inputs(jpeg.config, 8)
    ]
    assert np.isfinite(diffs).all() and jpeg.timing.request_bytes < robot.timing.request_bytes


def test_bad_requests_get_an_error_status_and_the_server_stays_up(server):
    assert server.request("POST", "/v1/step", b"\x00\x01garbage")[0] == 400
    status, body = server.request("POST", "/v1/step", msgpack.packb({"v": 99}))
    assert status == 400 and b"protocol version" in body
    status, body = server.request("POST", "/v1/step", bytes(2 * 2**20))  # over --max-request-mb 1
    assert status == 413, body
    status, body = server.request("POST", "/v1/step", b"x", headers={"Content-Length": "abc"})
    assert status == 400
    assert server.request("GET", "/v1/step")[0] == 405
    robot = _robot(server)
    head, hand, state, instruction = next(streaming_inputs(robot.config, 1))
    assert np.isfinite(robot.step(head, hand, state, instruction)).all()  # still serving


def test_a_decompression_bomb_is_refused_unread_while_another_robot_steps(server):
    """A faulty robot sends a 10000x10000 PNG as its head frame (0.3 MB; 300 MB decoded): the server answers 400
    from the header alone, and a robot stepping all the while is never refused a step."""
    from tests.bombs import png_bomb

    robot, other = _robot(server, robot="faulty"), _robot(server, robot="other")
    head, hand, state, instruction = next(streaming_inputs(robot.config, 1))
    size = robot.config.image_size
    request = robot.stream.request(resize_rgb(head, size), resize_rgb(hand, size), state, instruction, robot.width)
    msg = msgpack.unpackb(request.encode(), raw=False)
    msg["head"] = {"format": "jpeg", "image": png_bomb(10000)}
    bomb = msgpack.packb(msg, use_bin_type=True)
    done, steps, failures = threading.Event(), [0], []

    def drive_other() -> None:
        inputs = list(streaming_inputs(other.config, 8, seed=5))
        while not done.is_set():
            h, hd, st, ins = inputs[steps[0] % len(inputs)]
            try:
                other.step(h, hd, st, ins)
                steps[0] += 1
            except EngineError as exc:
                failures.append(str(exc))

    thread = threading.Thread(target=drive_other, daemon=True)
    thread.start()
    try:
        for _ in range(3):
            status, body = server.request("POST", "/v1/step", bomb)
            assert status == 400 and b"PNG of 10000x10000" in body and b"refused unread" in body, (status, body)
        assert _steps_past(steps, steps[0] + 3), "the other robot stopped stepping"
    finally:
        done.set()
        thread.join(30)
    assert not failures, failures


def _steps_past(steps: list[int], target: int, timeout_s: float = 10.0) -> bool:
    """Whether a stepping thread's count reaches ``target`` within ``timeout_s``."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if steps[0] >= target:
            return True
        time.sleep(0.05)
    return False


def test_a_wrong_token_fails_the_engine_with_the_reason(server, tmp_path):
    bad = tmp_path / "bad"
    write_token(bad, "not-the-token")
    with pytest.raises(EngineError, match="401"):
        build_remote_engine(server.url, token_file=str(bad))
