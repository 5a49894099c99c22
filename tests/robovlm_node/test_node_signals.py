"""The node as a process, ended the ways a robot's node is ended (a closed SSH terminal, kill -USR1, a broken log
pipe, SIGKILL): every catchable signal leaves zero as the last command and a clean exit; nothing kills the parent
without its engine process dying too. Black-box: the console script over DDS, real signals."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from robovlm_node.process import stop_signals
from tests.ros_harness import node_command

pytestmark = pytest.mark.dds


def _start(checkpoint: str, name: str, *, engine_process: bool) -> subprocess.Popen:
    return subprocess.Popen(
        node_command(
            f"model_path:={checkpoint}",
            "autostart:=true",
            "instruction:=go to the cup",
            "max_velocity:=[0.3]",
            f"engine_process:={'true' if engine_process else 'false'}",
            name=f"{name}",
        ),
        env=os.environ.copy(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (any of its threads)."""
    out = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
        except OSError:  # ended while we looked
            continue
        ppid = next((line.split()[1] for line in text.splitlines() if line.startswith("PPid:")), None)
        if ppid == str(pid):
            out.append(int(status.parent.name))
    return out


def _gone(pid: int) -> bool:
    """Ended: no such process, or a zombie nobody reaped yet (this container's init may not reap)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    return any(line.startswith("State:") and "Z" in line.split()[1] for line in text.splitlines())


def test_every_catchable_terminating_signal_is_handled():
    sigs = set(stop_signals())
    for name in ("SIGHUP", "SIGINT", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGPIPE", "SIGALRM", "SIGTERM", "SIGXCPU"):
        assert getattr(signal, name) in sigs, name
    assert signal.SIGRTMIN in sigs and signal.SIGRTMAX in sigs
    for fault in (signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE, signal.SIGILL, signal.SIGABRT, signal.SIGKILL):
        assert fault not in sigs  # synchronous faults are the kernel's (faulthandler prints them); SIGKILL can't be


@contextmanager
def _driving(h, checkpoint: str, name: str, *, engine_process: bool):
    """The node process, fed by the harness's peer until it drives; killed afterwards if the test left it running."""
    proc = _start(checkpoint, name, engine_process=engine_process)
    try:
        h.start_feeding()
        assert h.wait_for(lambda: any(abs(c[1][0]) > 0 for c in h.commands()), 60), "no command from the process"
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()


def _ended_with_zero(h, proc: subprocess.Popen, sig: str) -> str:
    out, _ = proc.communicate(timeout=30)
    time.sleep(0.3)
    assert proc.returncode == 0, out
    assert np.all(h.commands()[-1][1] == 0), f"the last command after {sig} must be zero"
    assert max(abs(v[0]) for _, v in h.commands()) <= 0.3 + 1e-9
    return out


@pytest.mark.parametrize("sig", ["SIGINT", "SIGQUIT", "SIGUSR1", "SIGPIPE", "SIGALRM", "SIGRTMIN"])  # SIGHUP: below
def test_a_signal_that_would_end_the_process_leaves_zero_last(checkpoint, harness_factory, sig):
    h = harness_factory({"model_path": checkpoint})  # the peer alone (its RoboVLMNode stays unconfigured)
    with _driving(h, checkpoint, f"robovlm_{sig.lower()}", engine_process=False) as proc:
        proc.send_signal(getattr(signal, sig))
        out = _ended_with_zero(h, proc, sig)
    assert f"{sig} received: stopping the robot and exiting" in out, out


def test_a_closed_terminal_stops_the_robot_and_the_engine_process(checkpoint, harness_factory):
    h = harness_factory({"model_path": checkpoint})
    with _driving(h, checkpoint, "robovlm_hup", engine_process=True) as proc:
        engines = _children(proc.pid)
        assert engines, "the engine process was not found"
        proc.send_signal(signal.SIGHUP)
        _ended_with_zero(h, proc, "SIGHUP")
    assert all(_gone(pid) for pid in engines), "the engine process outlived the node"


def test_the_engine_process_dies_with_a_killed_node(checkpoint, harness_factory):
    """SIGKILL cannot be caught (no final zero is possible: the base's own cmd_vel timeout is the guard), but the
    engine must not stay behind holding the GPU and the model's memory."""
    h = harness_factory({"model_path": checkpoint})
    with _driving(h, checkpoint, "robovlm_kill", engine_process=True) as proc:
        engines = _children(proc.pid)
        assert engines, "the engine process was not found"
        proc.kill()
        proc.communicate(timeout=30)
        end = time.monotonic() + 10
        while time.monotonic() < end and not all(_gone(pid) for pid in engines):
            time.sleep(0.05)
    assert all(_gone(pid) for pid in engines), "the engine process outlived a killed node"
