"""RosLoopClock on sim time: a sleep ends at its deadline when ``/clock`` gets there, and at once when the loop is
stopped while ``/clock`` is paused (a paused simulator or bag): deactivation never waits for a clock that does not
move."""

import threading
import time

import pytest
import rclpy
from rclpy.clock import ROSClock
from rclpy.context import Context
from rclpy.time import Time

from robovlm_node.clock import RosLoopClock
from robovlm_node.control import ClockGone


@pytest.fixture
def sim_clock():
    context = Context()
    rclpy.init(context=context)
    clock = ROSClock()
    clock._set_ros_time_is_active(True)
    clock.set_ros_time_override(Time(seconds=1))
    yield RosLoopClock(clock, context), clock, context
    rclpy.try_shutdown(context=context)


def _sleep_in_thread(loop_clock, deadline_ns, stop):
    result = {}

    def run():
        t0 = time.monotonic()
        try:
            result["reached"] = loop_clock.sleep_until_ns(deadline_ns, stop)
        except ClockGone:
            result["gone"] = True
        result["wall"] = time.monotonic() - t0

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result


def test_a_sim_time_sleep_ends_when_the_clock_reaches_its_deadline(sim_clock):
    loop_clock, clock, _ = sim_clock
    thread, result = _sleep_in_thread(loop_clock, 2_000_000_000, threading.Event())
    time.sleep(0.1)
    assert thread.is_alive()  # the paused clock does not reach it
    clock.set_ros_time_override(Time(seconds=1, nanoseconds=500_000_000))
    time.sleep(0.1)
    assert thread.is_alive()  # not yet
    clock.set_ros_time_override(Time(seconds=2))
    thread.join(timeout=2)
    assert result["reached"] is True


def test_a_sim_time_sleep_on_a_paused_clock_ends_when_the_loop_stops(sim_clock):
    loop_clock, _, _ = sim_clock
    stop = threading.Event()
    thread, result = _sleep_in_thread(loop_clock, 2_000_000_000, stop)
    time.sleep(0.1)
    t0 = time.monotonic()
    stop.set()
    thread.join(timeout=2)
    assert not thread.is_alive() and result["reached"] is False
    assert time.monotonic() - t0 < 0.5  # not the control loop's one-second join timeout


def test_a_sim_time_sleep_ends_when_ros_time_is_switched_off_or_the_context_ends(sim_clock):
    loop_clock, clock, context = sim_clock
    thread, result = _sleep_in_thread(loop_clock, 2_000_000_000, threading.Event())
    time.sleep(0.1)
    clock._set_ros_time_is_active(False)
    thread.join(timeout=2)
    assert result["reached"] is False
    clock._set_ros_time_is_active(True)
    thread, result = _sleep_in_thread(loop_clock, 2_000_000_000, threading.Event())
    time.sleep(0.1)
    rclpy.try_shutdown(context=context)
    thread.join(timeout=2)
    assert result.get("gone") is True
