"""Diagnostics of the data flywheel's parts: the rollout recorder (``recorder.py``) and the operator's takeover
(``takeover.py``). Kept apart from ``diagnostics.py`` (the node's core statuses), which calls them."""

from __future__ import annotations

from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

from .recorder import GB, RecordingSnapshot
from .takeover import TakeoverSnapshot

OK, WARN = DiagnosticStatus.OK, DiagnosticStatus.WARN


def recording_status(*, node: str, snap: RecordingSnapshot) -> DiagnosticStatus:
    """OK while recording (or between episodes); WARN once recording stopped (disk budget, a failed write) or
    messages were dropped: the robot drives on either way."""
    st = DiagnosticStatus(name=f"{node}: recording", hardware_id=snap.directory)
    values = {
        "record_dir": snap.directory,
        "episode": snap.episode or "none",
        "episodes": snap.episodes,
        "gb_in_record_dir": f"{snap.bytes_total / GB:.4f}",
        "record_max_gb": f"{snap.max_bytes / GB:g}",
        "dropped": snap.dropped,
        "stopped_because": snap.stopped or "none",
    }
    st.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
    if snap.stopped:
        st.level, st.message = WARN, f"recording stopped: {snap.stopped}"
    elif snap.dropped:
        st.level, st.message = WARN, f"recording {snap.episode}: {snap.dropped} messages dropped (disk too slow)"
    elif snap.recording:
        st.level, st.message = OK, f"recording {snap.episode}"
    else:
        st.level, st.message = OK, f"not recording (inactive); {snap.episodes} episodes in this run"
    return st


def takeover_status(*, node: str, snap: TakeoverSnapshot, now: float) -> DiagnosticStatus:
    st = DiagnosticStatus(name=f"{node}: takeover", hardware_id=snap.how)
    held = "none" if snap.since is None else f"{now - snap.since:.1f}"
    values = {"source": snap.how, "operator_has_robot": snap.active, "interventions": snap.interventions}
    st.values = [KeyValue(key=k, value=str(v)) for k, v in {**values, "seconds_taken_over": held}.items()]
    st.level = OK
    st.message = f"operator has the robot ({held} s)" if snap.active else f"policy drives; takeover by {snap.how}"
    return st
