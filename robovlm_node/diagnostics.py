"""Diagnostics per concern, as ``diagnostic_updater`` users expect them on ``/diagnostics``.

One ``DiagnosticStatus`` per input (head camera, hand camera, joint states, instruction: rate, age, last fault),
one for the model (engine, device, threads, latency, restarts; ERROR while the engine is down) and one for the
control loop (rate, jitter, stopped fraction by cause). Input statuses carry their topic as ``hardware_id``; the
model and control statuses the inference device.
A stale hand camera is a WARN even when the node does not require it (the model then runs on its missing-hand
marker); a stale required input is an ERROR (the robot is stopped).

``Diagnostics`` is the node's part that publishes them once a second on a thread of the steady clock (diagnostics
keep coming when a stalled ``/clock`` freezes node time). It reads the other parts only through their snapshots and
readers: ``NodeStatus.snapshot``, ``Inputs.monitors``/``input_fault``/``instruction``, ``EngineSupervisor.snapshot``,
the scheduler's ``newest_stamp``, ``Watchdog.stalled`` and the output's ``is_open``.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from robovlm.runtime.metrics import EventWindow
from robovlm.runtime.scheduler import ChunkScheduler

from .flywheel_status import recording_status, takeover_status
from .input_monitor import InputMonitor
from .inputs import Inputs
from .loop_thread import LoopThread
from .operator_enable import HOLD_CAUSE as NOT_ENABLED
from .operator_enable import EnableSnapshot, OperatorEnable
from .output import CommandPublisher
from .recorder import RolloutRecorder
from .settings import Settings
from .shadow import ShadowComparison
from .status import STOP_CAUSES, NodeStatus
from .supervision import EngineSupervisor
from .takeover import Takeover
from .watchdog import Watchdog

OK, WARN, ERROR = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR
FAULT_RECENT_S = 5.0  # a fault younger than this keeps its input at WARN


def input_status(
    monitor: InputMonitor,
    now: float,
    *,
    node: str,
    used: bool,
    required: bool,
    timeout_s: float,
    active: bool,
    fault_now: str | None = None,
) -> DiagnosticStatus:
    """``fault_now``: the fault of the input's newest message or frames (``stale_stamp``, ``blank_image``, ...),
    an ERROR when the input is required (the robot is stopped), a WARN otherwise."""
    m = monitor.snapshot(now)
    age, fault = m.age, m.last_fault
    st = DiagnosticStatus(name=f"{node}: {monitor.label}", hardware_id=monitor.topic)
    st.values = _kv(
        {
            "topic": monitor.topic,
            "used_by_model": used,
            "required": required,
            "rate_hz": f"{m.rate_hz:.2f}",
            "age_s": "never" if age is None else f"{age:.3f}",
            "faults": m.faults,
            "last_fault": fault or "none",
        }
    )
    stale = age is None or age > timeout_s
    recent_fault = m.last_fault_t is not None and now - m.last_fault_t <= FAULT_RECENT_S
    problems = ([fault] if fault_now else []) + (
        ["never received" if age is None else f"stale ({age:.2f} s)"] if stale else []
    )
    if not used:
        st.level, st.message = OK, "not used by the model"
    elif problems and active and required:
        st.level, st.message = ERROR, "; ".join(problems) + ": stopped"
    elif problems and active:
        st.level, st.message = WARN, "; ".join(problems) + ": the model runs on its missing-input marker"
    elif fault_now:
        st.level, st.message = WARN, fault
    elif recent_fault:
        st.level, st.message = WARN, f"bad messages: {fault}"
    else:
        st.level, st.message = OK, "ok" if not stale else "inactive"
    return st


def instruction_status(
    *,
    node: str,
    topic: str,
    text: str,
    source: str,
    changed_at: float | None,
    now: float,
    active: bool,
    refused: int = 0,
    error: str | None = None,
) -> DiagnosticStatus:
    st = DiagnosticStatus(name=f"{node}: instruction", hardware_id=topic)
    st.values = _kv(
        {
            "topic": topic,
            "instruction": text[:200],
            "length": len(text),
            "source": source or "none",
            "age_s": "never" if changed_at is None else f"{now - changed_at:.3f}",
            "refused": refused,
            "refused_reason": error or "none",
        }
    )
    if error:
        st.level, st.message = ERROR, f"refused: {error}; stopped until a valid instruction arrives"
    elif text:
        st.level, st.message = OK, "set"
    elif active:
        st.level, st.message = ERROR, "no instruction: stopped (set the 'instruction' parameter or publish one)"
    else:
        st.level, st.message = OK, "not set"
    return st


def _fmt(value: Any) -> Any:
    return f"{value:.1f}" if isinstance(value, float) else value


def model_status(
    *,
    node: str,
    engine: str,
    device: str,
    device_name: str,
    latency: EventWindow,
    now: float,
    active: bool,
    fresh: bool,
    restarts: int,
    errors: int,
    last_error: str,
    down: str | None = None,
    threads: int | None = None,
    remote: dict[str, Any] | None = None,
) -> DiagnosticStatus:
    """``remote``: the remote engine's last step (server, round trip, server and network time, batch, replica)."""
    st = DiagnosticStatus(name=f"{node}: model", hardware_id=device_name)
    extra = {} if remote is None else {f"server_{k}" if k != "server" else k: _fmt(v) for k, v in remote.items()}
    st.values = _kv(
        {
            "engine": engine,
            "device": device,
            "device_name": device_name,
            "inference_rate_hz": f"{latency.rate_hz(now):.2f}",
            "inference_latency_p50_ms": f"{latency.percentile(50) * 1e3:.1f}",
            "inference_latency_p99_ms": f"{latency.percentile(99) * 1e3:.1f}",
            "engine_threads": threads if threads is not None else "n/a",
            "restarts": restarts,
            "errors": errors,
            "last_error": last_error or "none",
            **extra,
        }
    )
    if down and remote is not None:
        st.level, st.message = ERROR, f"model server unavailable, robot held: {down}"
    elif down:
        st.level, st.message = ERROR, f"engine down, restarting: {down}"
    elif not active:
        st.level, st.message = OK, "inactive"
    elif not fresh:
        st.level, st.message = ERROR, "no fresh action chunk: stopped"
    else:
        st.level, st.message = OK, "running"
    return st


def control_status(
    *,
    node: str,
    device_name: str,
    ticks: EventWindow,
    target_hz: float,
    total_ticks: int,
    stops: dict[str, int],
    scheduling: str,
    now: float,
    active: bool,
    last_cause: str | None,
) -> DiagnosticStatus:
    rate = ticks.rate_hz(now)
    jitter = period_jitter(ticks.times(), 1.0 / target_hz)
    st = DiagnosticStatus(name=f"{node}: control loop", hardware_id=device_name)
    values = {
        "control_rate_hz": f"{rate:.2f}",
        "control_rate_target_hz": f"{target_hz:.2f}",
        "jitter_p50_pct": f"{jitter[0]:.2f}",
        "jitter_p99_pct": f"{jitter[1]:.2f}",
        "control_scheduling": scheduling,
        "ticks": total_ticks,
    }
    for cause in STOP_CAUSES:
        n = stops.get(cause, 0)
        values[f"stopped_{cause}"] = f"{n / total_ticks:.3f}" if total_ticks else "0.000"
    values["stopped_ticks"] = " ".join(f"{c}={n}" for c, n in stops.items() if n) or "none"
    st.values = _kv(values)
    if not active:
        st.level, st.message = OK, "inactive"
    elif last_cause == NOT_ENABLED:  # a robot waiting for its operator is not a fault (the operator status says why)
        st.level, st.message = OK, "held: motion not granted"
    elif last_cause in STOP_CAUSES:
        st.level, st.message = ERROR, f"stopped: {last_cause}"
    elif abs(rate - target_hz) > 0.1 * target_hz:
        st.level, st.message = WARN, f"control rate {rate:.1f} Hz off target {target_hz:g} Hz"
    else:
        st.level, st.message = OK, "driving"
    return st


def operator_status(*, node: str, snap: EnableSnapshot, now: float, active: bool) -> DiagnosticStatus:
    """Whether an operator grants motion, which sources, and when it last changed (``require_enable``)."""
    st = DiagnosticStatus(name=f"{node}: operator", hardware_id=snap.sources)
    since = "never" if snap.changed_at is None else f"{now - snap.changed_at:.1f}"
    st.values = _kv(
        {
            "require_enable": snap.required,
            "granted": snap.granted,
            "sources": snap.sources,
            "not_granted_because": snap.reason or "none",
            "seconds_since_change": since,
            "grants": snap.grants,
            "revocations": snap.revocations,
        }
    )
    if not snap.required:
        st.level, st.message = OK, "motion needs no grant (require_enable false)"
    elif snap.granted:
        st.level, st.message = OK, f"motion granted by {snap.sources}"
    else:
        st.level = WARN if active else OK
        st.message = f"motion not granted: {snap.reason}"
    return st


def shadow_status(*, node: str, shadow: ShadowComparison, now: float, mode: str) -> DiagnosticStatus:
    """The policy's agreement with the operator over the rolling window (``robovlm.runtime.agreement``)."""
    st = DiagnosticStatus(name=f"{node}: shadow", hardware_id=shadow.topic)
    summary = shadow.summary(now)
    age = shadow.operator_age(now)
    values: dict[str, Any] = {
        "output_mode": mode,
        "operator_cmd_age_s": "never" if age is None else f"{age:.2f}",
        "window_s": f"{shadow.window_s:g}",
        "compared": shadow.pairs,
    }
    for name, a in summary.items():
        values[f"{name}_mae"] = f"{a.mae:.4f}"
        values[f"{name}_same_sign"] = f"{a.sign_agreement:.3f}"
        values[f"{name}_correlation"] = "nan" if math.isnan(a.correlation) else f"{a.correlation:.3f}"
        values[f"{name}_samples"] = a.samples
    st.values = _kv(values)
    if not summary:
        st.level, st.message = OK, f"no operator command on {shadow.topic} in the window"
    else:
        st.level = OK
        st.message = "; ".join(f"{name}: {a.format()}" for name, a in summary.items())
    return st


def period_jitter(times: list[float], period: float) -> tuple[float, float]:
    """p50 and p99 of |tick interval - period| as a percentage of the period (nan with fewer than 3 ticks)."""
    if len(times) < 3 or not period > 0:
        return math.nan, math.nan
    dev = np.abs(np.diff(np.asarray(times)) - period) / period * 100.0
    return float(np.percentile(dev, 50)), float(np.percentile(dev, 99))


def _kv(values: dict[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=k, value=str(v)) for k, v in values.items()]


class Diagnostics:
    def __init__(
        self,
        *,
        node_name: str,
        settings: Settings,
        publisher: Any,
        clock: Callable[[], float],
        stamp: Callable[[], Any],
        status: NodeStatus,
        inputs: Inputs,
        supervisor: EngineSupervisor,
        scheduler: ChunkScheduler,
        watchdog: Watchdog,
        output: CommandPublisher,
        enable: OperatorEnable,
        shadow: ShadowComparison | None,
        agreement_publisher: Any,
        takeover: Takeover | None = None,
        recorder: RolloutRecorder | None = None,
    ) -> None:
        self.node_name = node_name
        self.settings = settings
        self._publisher = publisher  # DiagnosticArray on /diagnostics; the node creates and frees it
        self._now = clock  # node clock, seconds
        self._stamp = stamp  # node clock as a message stamp
        self._status = status
        self._inputs = inputs
        self._supervisor = supervisor
        self._scheduler = scheduler
        self._watchdog = watchdog
        self._output = output
        self._enable = enable
        self._shadow = shadow
        self._agreement_pub = agreement_publisher  # DiagnosticStatus on ~/agreement (with shadow); the node frees it
        self._takeover = takeover
        self._recorder = recorder
        self._thread = LoopThread("robovlm-diagnostics", self.run)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 2.0) -> None:
        self._thread.stop(timeout_s)

    def statuses(self) -> list[DiagnosticStatus]:
        """One status per input, one for the instruction, the model, the control loop and the operator."""
        now, s, name = self._now(), self.settings, self.node_name
        active = self._output.is_open()
        inputs = self._inputs
        statuses = [
            input_status(
                m,
                now,
                node=name,
                used=inputs.used[k],
                required=k in inputs.required,
                timeout_s=s.input_timeout_s,
                active=active,
                fault_now=inputs.input_fault(k),
            )
            for k, m in inputs.monitors.items()
        ]
        counters = self._status.snapshot()
        ins = inputs.instruction()
        statuses.append(
            instruction_status(
                node=name,
                topic=s.instruction_topic,
                text=ins.text,
                source=ins.source,
                changed_at=ins.changed_at,
                now=now,
                active=active,
                refused=counters.faults.get("instruction_refused", 0),
                error=ins.error,
            )
        )
        engine = self._supervisor.snapshot()
        newest = self._scheduler.newest_stamp()
        statuses.append(
            model_status(
                node=name,
                engine=engine.name,
                device=s.device,
                device_name=engine.device_name,
                latency=self._status.infer_events,
                now=now,
                active=active,
                fresh=newest is not None and now - newest <= s.chunk_timeout_s,
                restarts=engine.restarts,
                errors=counters.faults.get("inference_error", 0),
                last_error=engine.last_error,
                down=engine.down,
                threads=s.engine_threads,
                remote=engine.remote,
            )
        )
        control = control_status(
            node=name,
            device_name=engine.device_name,
            ticks=self._status.control_events,
            target_hz=s.control_rate_hz,
            total_ticks=counters.control_ticks,
            stops=counters.stops,
            scheduling=counters.control_scheduling,
            now=now,
            active=active,
            last_cause="clock_stalled" if self._watchdog.stalled() else counters.last_cause,
        )
        e2e = self._status.e2e_events
        control.values += [
            KeyValue(key="camera_to_command_p50_ms", value=f"{e2e.percentile(50) * 1e3:.1f}"),
            KeyValue(key="camera_to_command_p99_ms", value=f"{e2e.percentile(99) * 1e3:.1f}"),
            *[KeyValue(key=f"faults_{k}", value=str(v)) for k, v in sorted(counters.faults.items())],
        ]
        statuses.append(control)
        statuses.append(operator_status(node=name, snap=self._enable.snapshot(), now=now, active=active))
        if self._takeover is not None:
            statuses.append(takeover_status(node=name, snap=self._takeover.snapshot(), now=now))
        if self._recorder is not None:
            statuses.append(recording_status(node=name, snap=self._recorder.snapshot()))
        if self._shadow is not None:
            statuses.append(shadow_status(node=name, shadow=self._shadow, now=now, mode=s.output_mode))
        return statuses

    def run(self, stop: threading.Event) -> None:
        """Publish once a second of steady time until ``stop``; one failed round is logged, never fatal."""
        while not stop.wait(1.0):
            try:
                self.publish()
            except Exception as exc:  # e.g. the publisher destroyed during cleanup; the next round sees it gone
                self._status.log.debug(f"diagnostics round skipped: {exc}")

    def publish(self) -> None:
        msg = DiagnosticArray()
        msg.header.stamp = self._stamp()
        msg.status = self.statuses()
        self._publisher.publish(msg)
        if self._agreement_pub is not None:
            shadow = [st for st in msg.status if st.name == f"{self.node_name}: shadow"]
            if shadow:
                self._agreement_pub.publish(shadow[0])
