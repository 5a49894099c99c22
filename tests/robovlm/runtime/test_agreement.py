"""The agreement figures shadow mode and ``robovlm replay`` report: MAE, sign agreement with its dead band, and
correlation, per field; the rolling window forgets what is older than it."""

import math

import numpy as np
import pytest

from robovlm.runtime.agreement import SIGN_DEADBAND, RollingAgreement, agreement


def test_mae_sign_agreement_and_correlation_per_field():
    policy = np.array([[0.3, 0.0], [0.2, 0.01], [-0.1, 0.1], [0.0, -0.1]])
    operator = np.array([[0.3, 0.0], [0.1, -0.01], [0.1, 0.2], [0.0, -0.2]])
    a = agreement(policy, operator, ["linear.x", "linear.y"])
    assert a["linear.x"].mae == pytest.approx((0 + 0.1 + 0.2 + 0) / 4)
    assert a["linear.x"].sign_agreement == pytest.approx(0.75)  # -0.1 against +0.1 is the one disagreement
    assert a["linear.y"].sign_agreement == 1.0, "0.01 and -0.01 are inside the dead band: both zero"
    assert 0.01 < SIGN_DEADBAND
    assert a["linear.y"].correlation == pytest.approx(float(np.corrcoef(policy[:, 1], operator[:, 1])[0, 1]))
    assert a["linear.x"].samples == 4 and "same sign 75%" in a["linear.x"].format()


def test_a_constant_side_has_no_correlation_and_no_samples_give_nothing():
    a = agreement(np.full((5, 1), 0.3), np.linspace(0, 0.3, 5)[:, None], ["linear.x"])
    assert math.isnan(a["linear.x"].correlation) and "correlation n/a" in a["linear.x"].format()
    assert agreement(np.zeros((0, 1)), np.zeros((0, 1)), ["linear.x"]) == {}
    with pytest.raises(ValueError, match="pair up"):
        agreement(np.zeros((3, 1)), np.zeros((2, 1)), ["linear.x"])


def test_the_rolling_window_keeps_only_its_last_seconds():
    window = RollingAgreement(["linear.x"], window_s=2.0)
    for t in range(5):
        window.add(float(t), np.array([0.3]), np.array([-0.3 if t < 3 else 0.3]))
    summary = window.summary(now=4.0)["linear.x"]
    assert summary.samples == 3 and summary.sign_agreement == pytest.approx(2 / 3)  # t = 2, 3, 4
    assert window.summary(now=10.0) == {}
    with pytest.raises(ValueError, match="window_s"):
        RollingAgreement(["linear.x"], window_s=0.0)
