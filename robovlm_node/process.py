"""The ``robovlm_node`` process: start-up (``autostart``), the executor, and how the process ends. Every signal that
would end it becomes one orderly stop (deactivate, a final zero command, a clean exit), and a bad start-up value
becomes one line that names it.

A robot's node is ended in many ways besides Ctrl-C: an SSH session that drops sends SIGHUP, a supervisor may send
SIGQUIT or a user signal, a log pipe that closes raises SIGPIPE. Each of them, left to its default action, ends the
process on the spot and leaves the last velocity command in force on a base without its own timeout.
"""

from __future__ import annotations

import faulthandler
import re
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

import rclpy
from rclpy.exceptions import NameValidationException, ParameterException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.logging import get_logger
from rclpy.signals import SignalHandlerOptions

from robovlm.runtime.engine import limit_threads

from .node import CONTROL_SWITCH_INTERVAL_S, RoboVLMNode
from .parameters import ParameterError


def stop_signals() -> list[int]:
    """Every signal whose default action ends the process and that a handler can catch without a fault in progress:
    SIGINT and SIGTERM, a closed terminal (SIGHUP), SIGQUIT, the user signals, a broken log pipe (SIGPIPE, which
    Python ignores, so a closed pipe would otherwise leave the node running deaf), timers, resource limits and the
    real-time signals. The synchronous faults (SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT, SIGSYS, SIGTRAP) are left to
    the kernel: a handler cannot run safely inside them (``faulthandler`` prints their traceback)."""
    names = (
        "SIGHUP",
        "SIGINT",
        "SIGQUIT",
        "SIGUSR1",
        "SIGUSR2",
        "SIGPIPE",
        "SIGALRM",
        "SIGTERM",
        "SIGSTKFLT",
        "SIGXCPU",
        "SIGXFSZ",
        "SIGVTALRM",
        "SIGPROF",
        "SIGIO",
        "SIGPWR",
    )
    sigs = [int(getattr(signal, n)) for n in names if hasattr(signal, n)]
    if hasattr(signal, "SIGRTMIN"):
        sigs += list(range(signal.SIGRTMIN, signal.SIGRTMAX + 1))
    return sigs


class SignalStop:
    """Sets ``event`` on any of ``stop_signals()`` (the main thread then shuts the node down) and remembers which."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event
        self.received: list[int] = []

    def install(self) -> None:
        for sig in stop_signals():
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self.received.append(signum)
        self.event.set()

    def describe(self) -> str | None:
        """'SIGHUP received: ...' for the first signal, or None."""
        if not self.received:
            return None
        return f"{signal_name(self.received[0])} received: stopping the robot and exiting"


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:  # a real-time signal without a name of its own
        return f"SIGRTMIN+{signum - signal.SIGRTMIN}" if hasattr(signal, "SIGRTMIN") else f"signal {signum}"


def start_error(exc: Exception) -> str:
    """One line naming a bad start-up value; rclpy's type error (``use_sim_time:=maybe``) in the words ours use."""
    m = re.match(r"Trying to set parameter '(.+)' to '(.*)' of type '(\w+)', expecting type '(\w+)'", str(exc))
    if m:
        want = {"BOOL": "true or false", "INTEGER": "an integer", "DOUBLE": "a number", "STRING": "a string"}
        return f"parameter '{m[1]}' must be {want.get(m[4], m[4].lower())}, got {m[2]!r}"
    return str(exc).splitlines()[0]


def main(args: list[str] | None = None, *, engine_wrapper: Callable[[Any], Any] | None = None) -> int:
    """Console entry point. ``autostart:=true`` configures and activates without a lifecycle manager.
    ``engine_wrapper``: the simulator tools' slowed engine (``robovlm_node.tools.sim_node``); a robot's node has none.

    Every catchable signal that would end the process (``stop_signals``: SIGINT, SIGTERM, SIGHUP from a closed
    terminal, SIGQUIT, SIGUSR1, ...) deactivates the node first, so the last command on ``cmd_vel`` is zero, and the
    process exits with 0. The engine process ends with this one whatever ends it (``robovlm.runtime.worker``).
    """
    faulthandler.enable()
    sys.setswitchinterval(CONTROL_SWITCH_INTERVAL_S)
    limit_threads(1)  # this process's own tensor work is one resize per frame; the engine has engine_threads
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    try:
        node = RoboVLMNode(engine_wrapper=engine_wrapper)
    except (ParameterError, ParameterException, NameValidationException) as exc:  # a bad start-up value (ours, or
        # rclpy's own such as use_sim_time:=maybe, or a bad node name): name it and exit, never run on a default
        get_logger("robovlm").error(f"refusing to start: {start_error(exc)}")
        rclpy.try_shutdown()
        return 2
    # Single-threaded on purpose: inference has its own thread, and rclpy's MultiThreadedExecutor (9.1.x) stalls
    # every Python thread for up to a timer period when a subscription and a publisher share the process
    # (ros2/rclpy#1452, fixed upstream by ros2/rclpy#1547).
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    stop = node.shutdown_requested  # also abandons a model load in progress
    node.exit_on_error = node.get_parameter("autostart").value is True
    signals = SignalStop(stop)
    signals.install()
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    code = 0
    try:
        if node.get_parameter("autostart").value is True:
            if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                if not stop.is_set():  # a signal during loading is a normal stop, not a failure
                    node.get_logger().error("autostart: configure failed; exiting")
                    code = 1
                stop.set()
            elif node.trigger_activate() != TransitionCallbackReturn.SUCCESS:
                node.get_logger().error("autostart: activate failed; exiting")
                code = 1
                stop.set()
        while not stop.wait(0.1):
            pass
        if signals.received:
            node.get_logger().info(signals.describe() or "")
        if node.fatal_reason:
            code = 1
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        try:
            node.trigger_shutdown()  # publishes zero first when active
        except Exception as exc:  # already finalized or mid-transition: nothing left to stop
            node.get_logger().debug(f"shutdown transition: {exc}")
        executor.shutdown()
        spinner.join(timeout=5.0)
        node.destroy_node()
        rclpy.try_shutdown()
    return code


if __name__ == "__main__":
    raise SystemExit(main())
