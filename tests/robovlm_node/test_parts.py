"""The node's ROS-free parts without rclpy: the control loop's deadline pacing and its hold causes on a fake clock,
with the real inputs, scheduler, safety filter, watchdog, engine supervisor and command output (its publisher is
the one thing replaced: a list)."""

import dataclasses
import logging
import subprocess
import sys
import threading

import numpy as np
import pytest
from sensor_msgs.msg import Image

from robovlm.model.tokenizer import ByteTokenizer
from robovlm.runtime.engine import EngineError
from robovlm.runtime.safety import SafetyFilter
from robovlm.runtime.scheduler import ActionChunk, ChunkScheduler
from robovlm_node.control import ClockGone, ControlLoop
from robovlm_node.inputs import Inputs, ModelInputs
from robovlm_node.output import CommandPublisher
from robovlm_node.settings import Settings
from robovlm_node.status import NodeStatus
from robovlm_node.supervision import EngineSupervisor
from robovlm_node.watchdog import Watchdog

RATE_HZ = 20.0
PERIOD_NS = 50_000_000
T0_NS = 100 * 1_000_000_000


def make_settings(**overrides) -> Settings:
    """Test values for every field (the defaults are written once, in the node's parameter table)."""
    values = dict(
        model_path="unused",
        device="cpu",
        engine="torch",
        dtype="float32",
        onnx_tensorrt=False,
        onnx_cache_dir="",
        server_url="",
        server_token_file="",
        server_timeout_s=1.0,
        jpeg_quality=0,
        engine_process=False,
        instruction="go around the box to the cup",
        engine_threads=1,
        engine_step_timeout_s=5.0,
        engine_max_restarts=3,
        engine_restart_window_s=60.0,
        max_image_pixels=1_000_000,
        min_image_side_px=32,
        min_image_contrast=2.0,
        max_saturated_fraction=0.95,
        max_frozen_s=2.0,
        use_receive_time=False,
        max_stamp_lead_s=0.1,
        clock_stall_timeout_s=0.5,
        instruction_topic="instruction",
        control_rate_hz=RATE_HZ,
        head_camera_topic="head_camera/image_raw",
        head_camera_compressed=False,
        hand_camera_topic="hand_camera/image_raw",
        hand_camera_compressed=False,
        require_hand_camera=False,
        joint_states_topic="joint_states",
        state_joints=[],
        cmd_vel_topic="cmd_vel",
        stamped=True,
        frame_id="base_link",
        action_fields=["linear.x", "linear.y"],
        max_velocity=[0.5, 0.5],
        max_accel=[100.0, 100.0],
        input_timeout_s=0.5,
        chunk_timeout_s=1.0,
        chunk_mode="latest",
        ensemble_decay=0.01,
        control_rt_priority=0,
        require_enable=False,
        enable_topic="~/enable",
        enable_timeout_s=0.5,
        enable_joy_topic="",
        enable_joy_button=-1,
        disabled_output="zero",
        output_mode="drive",
        operator_cmd_topic="",
        operator_cmd_stamped=False,
        agreement_window_s=10.0,
        takeover_joy_button=-1,
        takeover_timeout_s=0.3,
        takeover_forward=False,
        record_dir="",
        record_max_gb=20.0,
        record_full_frames=False,
        visualization_rate_hz=5.0,
        executed_window_s=5.0,
        autostart=False,
    )
    values.update(overrides)
    return Settings(**values)


class FakeClock:
    """Node time that moves only when the loop sleeps; ``late_ns`` makes the next wakes late, ``changes`` makes a
    sleep report a clock change, and the clock ends (``ClockGone``) after ``sleeps`` sleeps."""

    def __init__(self, *, sleeps: int) -> None:
        self.t_ns = T0_NS
        self.sleeps_left = sleeps
        self.late_ns: list[int] = []
        self.changes: set[int] = set()
        self.slept = 0

    def now_ns(self) -> int:
        return self.t_ns

    def now(self) -> float:
        return self.t_ns * 1e-9

    def sleep_until_ns(self, deadline_ns: int, stop=None) -> bool:
        if self.sleeps_left == 0:
            raise ClockGone("test over")
        self.sleeps_left -= 1
        self.slept += 1
        if self.slept in self.changes:
            self.t_ns += 1_000_000
            return False
        self.t_ns = max(self.t_ns, deadline_ns) + (self.late_ns.pop(0) if self.late_ns else 0)
        return True


class Published(list):
    """The lifecycle publisher's place: every message the output sends."""

    def publish(self, msg) -> None:
        self.append(msg)


@dataclasses.dataclass
class Parts:
    clock: FakeClock
    status: NodeStatus
    inputs: Inputs
    scheduler: ChunkScheduler
    watchdog: Watchdog
    output: CommandPublisher
    published: Published
    control: ControlLoop

    def commands(self) -> list[tuple[int, float, float]]:
        return [
            (m.header.stamp.sec * 1_000_000_000 + m.header.stamp.nanosec, m.twist.linear.x, m.twist.linear.y)
            for m in self.published
        ]


def make_parts(*, sleeps: int, holds_before: list | None = None, **overrides) -> Parts:
    s = make_settings(**overrides)
    clock = FakeClock(sleeps=sleeps)
    status = NodeStatus(logging.getLogger("robovlm.test"))
    scheduler = ChunkScheduler(s.chunk_mode, chunk_timeout_s=s.chunk_timeout_s)
    model = ModelInputs(
        image_size=32, uses_hand=False, uses_state=False, tokenizer=ByteTokenizer(), max_instruction_tokens=40
    )
    inputs = Inputs(s, model, clock=clock.now, status=status, on_new_task=scheduler.reset)
    inputs.set_instruction(s.instruction, source="parameter")
    published = Published()
    output = CommandPublisher(
        published, fields=s.action_fields, stamped=True, frame_id=s.frame_id, clock_ns=clock.now_ns
    )
    watchdog = Watchdog(
        stall_s=s.clock_stall_timeout_s,
        clock=clock.now,
        sim_time=lambda: True,
        inputs=inputs,
        output=output,
        status=status,
    )
    control = ControlLoop(
        rate_hz=s.control_rate_hz,
        input_timeout_s=s.input_timeout_s,
        rt_priority=0,
        clock=clock,
        scheduler=scheduler,
        safety=SafetyFilter(s.safety_limits()),
        inputs=inputs,
        holds=[*(holds_before or []), watchdog, inputs],
        output=output,
        status=status,
    )
    output.open()
    return Parts(clock, status, inputs, scheduler, watchdog, output, published, control)


def head_frame(clock: FakeClock, *, value: int | None = None, age_s: float = 0.0) -> Image:
    rng = np.random.default_rng(0)
    pixels = (
        rng.integers(0, 255, (48, 48, 3), dtype=np.uint8) if value is None else np.full((48, 48, 3), value, np.uint8)
    )
    msg = Image(height=48, width=48, encoding="rgb8", step=48 * 3, data=pixels.tobytes())
    stamp_ns = clock.t_ns - int(age_s * 1e9)
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    return msg


def plan(parts: Parts, vx: float = 0.3) -> None:
    """What the inference loop does with a model step: a chunk stamped now, steps of 0.1 s."""
    actions = np.tile([vx, 0.0], (20, 1))
    assert parts.scheduler.push(ActionChunk(stamp=parts.clock.now(), dt=0.1, actions=actions))


def test_the_parts_import_without_rclpy():
    code = (
        "import sys\n"
        "import robovlm_node.control, robovlm_node.inference, robovlm_node.inputs, robovlm_node.status\n"
        "import robovlm_node.supervision, robovlm_node.watchdog, robovlm_node.output\n"
        "assert 'rclpy' not in sys.modules, sorted(m for m in sys.modules if m.startswith('rclpy'))\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_ticks_fall_on_absolute_deadlines_one_period_apart():
    p = make_parts(sleeps=40)
    p.control.run(threading.Event())  # ends when the fake clock does
    stamps = [c[0] for c in p.commands()]
    assert len(stamps) == 40
    assert stamps[0] == T0_NS + PERIOD_NS
    assert set(np.diff(stamps)) == {PERIOD_NS}
    assert p.status.snapshot().control_ticks == 40
    assert p.status.fault_count("control_overrun") == 0


def test_a_late_wake_within_a_period_keeps_the_grid_and_a_longer_one_resynchronizes():
    p = make_parts(sleeps=12)
    p.clock.late_ns = [0, 0, 0, 30_000_000, 0, 0, 0, 0, 130_000_000]  # 30 ms late: kept; 130 ms: more than a period
    p.control.run(threading.Event())
    stamps = [c[0] for c in p.commands()]
    assert stamps[4] - stamps[3] == PERIOD_NS - 30_000_000
    assert (stamps[4] - T0_NS) % PERIOD_NS == 0, "after a short delay the next tick is back on the grid"
    assert p.status.fault_count("control_overrun") == 1
    late = stamps[8]
    assert [s - late for s in stamps[9:]] == [PERIOD_NS * i for i in range(len(stamps) - 9)], (
        "after an overrun: one tick at once, then the grid restarts from there"
    )


def test_the_first_tick_after_activation_is_not_an_overrun():
    p = make_parts(sleeps=5)
    p.clock.late_ns = [400_000_000]  # a paused sim clock resumes: the first wake is far past its deadline
    p.control.run(threading.Event())
    assert p.status.fault_count("control_overrun") == 0
    assert len(p.commands()) == 5


def test_a_clock_source_change_restarts_the_deadlines_and_the_loop_goes_on():
    p = make_parts(sleeps=10)
    p.clock.changes = {3}
    p.control.run(threading.Event())
    assert p.status.fault_count("clock_changed") == 1
    assert len(p.commands()) == 9


def test_hold_causes_stop_the_robot_in_order_and_it_drives_again_when_they_end():
    p = make_parts(sleeps=1_000_000)
    p.status.start_began(p.clock.now())
    tick = p.control.tick

    def step(n: int = 1) -> tuple[float, float]:
        for _ in range(n):
            p.clock.t_ns += PERIOD_NS
            tick()
        return p.commands()[-1][1:]

    assert step() == (0.0, 0.0) and p.status.snapshot().last_cause == "stale_input"  # nothing arrived yet
    p.inputs.on_camera("head", head_frame(p.clock))
    assert step() == (0.0, 0.0) and p.status.snapshot().last_cause == "no_fresh_chunk"  # waiting for the model
    assert p.status.waiting_since() is not None, "still starting: reported at INFO, not counted as faults"
    plan(p)
    p.inputs.on_camera("head", head_frame(p.clock))
    assert step() == (pytest.approx(0.3), 0.0), "inputs fresh and a chunk planned: drives"
    assert p.status.waiting_since() is None

    p.inputs.on_camera("head", head_frame(p.clock, age_s=2.0))  # a frame stamped 2 s ago
    assert step() == (0.0, 0.0) and p.status.snapshot().last_cause == "stale_stamp"
    p.inputs.on_camera("head", head_frame(p.clock))
    plan(p)
    assert step() == (pytest.approx(0.3), 0.0)

    generation = p.scheduler.generation
    assert p.inputs.set_instruction("x" * 500, source="topic") is not None  # too long for 40 tokens: refused
    assert step() == (0.0, 0.0) and p.status.snapshot().last_cause == "bad_instruction"
    assert p.scheduler.generation > generation, "a refused instruction ends the task: its chunks are dropped"
    p.watchdog.check(0.0)
    p.watchdog.check(10.0)  # steady time runs on, the node clock does not: stalled
    assert p.watchdog.stalled()
    assert step() == (0.0, 0.0) and p.status.snapshot().last_cause == "clock_stalled", (
        "the watchdog's cause comes before the inputs' in the hold order"
    )
    p.watchdog.check(10.1)  # the node clock moved (step advanced it): resumed
    assert not p.watchdog.stalled()
    assert p.inputs.set_instruction("go around the box to the cup", source="topic") is None
    p.inputs.on_camera("head", head_frame(p.clock))
    assert step() == (0.0, 0.0) and p.status.snapshot().last_cause == "no_fresh_chunk", (
        "the chunks of the refused task never come back"
    )
    plan(p)
    assert step() == (pytest.approx(0.3), 0.0)

    blank = head_frame(p.clock, value=255)  # a blown exposure: decoded on the inference thread
    p.inputs.on_camera("head", blank)
    assert p.inputs.camera_frames({"head": p.inputs.latest().head})["head"] is None
    assert step() == (0.0, 0.0) and p.status.snapshot().last_cause == "degenerate_image"
    p.inputs.on_camera("head", head_frame(p.clock))
    assert p.inputs.camera_frames({"head": p.inputs.latest().head})["head"] is not None
    plan(p)
    assert step() == (pytest.approx(0.3), 0.0)
    assert p.status.snapshot().stops["degenerate_image"] == 1


def test_a_closed_output_publishes_nothing_and_the_final_zero_is_last():
    p = make_parts(sleeps=3)
    p.output.close()
    p.control.run(threading.Event())
    assert p.published == [], "no command while inactive"
    p.output.final_zero()
    assert p.commands()[-1][1:] == (0.0, 0.0)
    p.output.publish_zero()
    assert len(p.published) == 1, "nothing follows the final zero"


def test_a_tick_that_raises_publishes_zero_and_the_loop_goes_on(monkeypatch):
    p = make_parts(sleeps=6)
    calls = {"n": 0}
    original = p.scheduler.action_at

    def flaky(now):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("boom")
        return original(now)

    monkeypatch.setattr(p.scheduler, "action_at", flaky)
    p.control.run(threading.Event())
    assert p.status.fault_count("control_error") == 1
    assert p.status.snapshot().stops["control_error"] == 1
    assert len(p.commands()) == 6


def test_an_engine_that_died_holds_the_robot_first(checkpoint):
    s = make_settings(model_path=checkpoint)
    status = NodeStatus(logging.getLogger("robovlm.test"))
    fatal: list[str] = []
    supervisor = EngineSupervisor(s, status=status, cancel=threading.Event(), on_fatal=fatal.append)
    supervisor.start()
    p = make_parts(sleeps=1, holds_before=[supervisor])
    p.inputs.on_camera("head", head_frame(p.clock, age_s=2.0))  # an input cause too: the engine's comes first
    stopped = threading.Event()
    stopped.set()  # the loop is stopping: recover marks the engine down and returns without a restart
    assert supervisor.recover(EngineError("the engine process died"), stopped) is False
    assert p.control.hold_cause() == "engine_down"
    assert "died" in supervisor.snapshot().last_error and not fatal
    supervisor.close()
