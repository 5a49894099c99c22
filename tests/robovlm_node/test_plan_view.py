"""PlanView without DDS: messages are built only for topics with a subscriber, ``~/plan`` is the followed chunk
integrated from now, ``~/executed`` the observed commands ending at the robot, and the control thread only
appends (its publishers are the one thing replaced: lists with a subscriber count)."""

from __future__ import annotations

import logging
from decimal import Decimal

import numpy as np

from robovlm.model.tokenizer import ByteTokenizer
from robovlm.runtime.plan_overlay import BAND, PANEL
from robovlm.runtime.scheduler import ActionChunk, ChunkScheduler
from robovlm_node.convert import rgb_to_image
from robovlm_node.inputs import Inputs, ModelInputs
from robovlm_node.plan_view import MAX_TRAIL_POSES, PlanView, time_msg
from robovlm_node.status import NodeStatus
from tests.robovlm_node.test_parts import make_settings


class Pub:
    def __init__(self) -> None:
        self.subscribers = 0
        self.sent: list = []

    def get_subscription_count(self) -> int:
        return self.subscribers

    def publish(self, msg) -> None:
        self.sent.append(msg)


def _view(now: list[float]):
    s = make_settings(chunk_mode="open_loop")
    scheduler = ChunkScheduler(s.chunk_mode, chunk_timeout_s=s.chunk_timeout_s)
    model = ModelInputs(
        image_size=32, uses_hand=False, uses_state=False, tokenizer=ByteTokenizer(), max_instruction_tokens=40
    )
    inputs = Inputs(
        s, model, clock=lambda: now[0], status=NodeStatus(logging.getLogger("t")), on_new_task=scheduler.reset
    )
    inputs.set_instruction("go to the cup", source="parameter")
    pubs = {name: Pub() for name in ("plan", "executed", "debug_image")}
    view = PlanView(
        plan_pub=pubs["plan"],
        executed_pub=pubs["executed"],
        image_pub=pubs["debug_image"],
        fields=s.action_fields,
        rate_hz=5.0,
        executed_window_s=2.0,
        frame_id="base_link",
        clock=lambda: now[0],
        scheduler=scheduler,
        inputs=inputs,
    )
    return view, pubs, scheduler, inputs


def test_nothing_is_built_without_a_subscriber_and_each_topic_only_for_its_own():
    now = [100.0]
    view, pubs, scheduler, _ = _view(now)
    scheduler.push(ActionChunk(100.0, 0.1, np.full((10, 2), 0.2, np.float32)))
    for _ in range(3):
        assert view.publish_once() == []
    assert all(not p.sent for p in pubs.values()) and view.published == dict.fromkeys(pubs, 0)
    pubs["plan"].subscribers = 1
    assert view.publish_once() == ["plan"] and len(pubs["plan"].sent) == 1 and not pubs["debug_image"].sent
    pubs["debug_image"].subscribers = 2
    assert sorted(view.publish_once()) == ["debug_image", "plan"]


def test_the_plan_is_the_followed_chunk_from_now_stamped_when_each_pose_is_due():
    now = [100.25]
    view, pubs, scheduler, _ = _view(now)
    actions = np.column_stack([np.linspace(0.1, 0.3, 10), np.linspace(-0.1, 0.1, 10)]).astype(np.float32)
    scheduler.push(ActionChunk(100.0, 0.1, actions))
    scheduler.action_at(100.25)  # open_loop: this chunk is now the one being executed
    scheduler.push(ActionChunk(100.2, 0.1, -actions))  # newer, but open_loop follows the current one to its end
    pubs["plan"].subscribers = 1
    view.publish_once()
    msg = pubs["plan"].sent[-1]
    xy = np.array([[p.pose.position.x, p.pose.position.y] for p in msg.poses])
    t = np.array([p.header.stamp.sec + p.header.stamp.nanosec * 1e-9 for p in msg.poses])
    assert msg.header.frame_id == "base_link" and len(xy) == 10 - 2 + 1  # actions 2..9, from the origin
    # action 2 is due from 100.2 to 100.3: from now, the robot drives it for the 0.05 s left of its step
    assert np.allclose(t, [100.25, *(100.3 + 0.1 * np.arange(8))], atol=1e-6)
    assert np.allclose(xy[0], 0) and np.allclose(np.diff(xy, axis=0), actions[2:] * np.diff(t)[:, None], atol=1e-7)


def test_the_executed_trail_keeps_its_window_and_ends_at_the_robot():
    now = [200.0]
    view, pubs, _, _ = _view(now)
    for i in range(60):  # 3 s at 20 Hz, 0.5 m/s forward; the window is 2 s
        view.observe(np.array([0.5, 0.0]), None, 197.025 + i * 0.05)
    now[0] = 200.0
    pubs["executed"].subscribers = 1
    view.publish_once()
    poses = pubs["executed"].sent[-1].poses
    x = np.array([p.pose.position.x for p in poses])
    assert np.isclose(x[-1], 0) and np.isclose(x[0], -0.5 * (200.0 - 198.025), atol=1e-9)
    assert len(poses) == 41  # the 40 commands of the last 2 s, and now
    assert np.allclose(np.diff(x), [0.5 * 0.05] * 39 + [0.5 * 0.025])  # each command's step; the last up to now
    now[0] = 201.0  # nothing published since (a silent hold): the window moves on all the same
    view.publish_once()
    assert len(pubs["executed"].sent[-1].poses) == 21
    for i in range(400):  # 2 s at 200 Hz: the window holds 400 commands, thinned to MAX_TRAIL_POSES poses
        view.observe(np.array([0.5, 0.0]), None, 201.0 + i * 0.005)
    now[0] = 203.0
    view.publish_once()
    thinned = pubs["executed"].sent[-1].poses
    assert len(thinned) == MAX_TRAIL_POSES and thinned[-1].pose.position.x == 0.0
    assert np.isclose(thinned[0].pose.position.x, -0.5 * 2.0, atol=0.01)  # the whole window still shown


def test_the_debug_image_shows_the_model_frame_and_the_hold_cause():
    now = [300.0]
    view, pubs, _, inputs = _view(now)
    frame = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    msg = rgb_to_image(frame, frame_id="head_camera_optical")
    msg.header.stamp.sec = 300
    inputs.on_camera("head", msg)
    inputs.camera_frames({"head": inputs.latest().head})  # as the inference loop converts it
    view.observe(np.zeros(2), "not_enabled", 300.0)
    pubs["debug_image"].subscribers = 1
    view.publish_once()
    img = pubs["debug_image"].sent[-1]
    assert (img.height, img.width, img.encoding) == (PANEL + BAND, 2 * PANEL, "rgb8")
    assert img.header.frame_id == "head_camera_optical"
    pixels = np.frombuffer(bytes(img.data), np.uint8).reshape(img.height, img.width, 3)
    assert np.array_equal(pixels[:PANEL, :PANEL], frame.repeat(PANEL // 32, 0).repeat(PANEL // 32, 1))


def test_stamps_keep_every_nanosecond_the_clock_has():
    """A plan's velocity is read back from its stamps: rounding them to 256 ns (``seconds * 1e9`` in float64) made the
    node-process test see a 1.3e-5 relative error on a 50 ms step."""
    for seconds in (1796685573.123456789, 1796685573.9999999999, 0.5, 12.000000001):
        t = time_msg(seconds)
        exact = Decimal(seconds) * 1_000_000_000  # the float's own value, in nanoseconds
        assert 0 <= t.nanosec < 1_000_000_000
        assert abs(Decimal(t.sec * 1_000_000_000 + t.nanosec) - exact) <= Decimal("0.5"), (seconds, t)
