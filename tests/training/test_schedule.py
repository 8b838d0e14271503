"""Warmup + cosine learning-rate factor."""

import pytest

from charfeat.training.schedule import lr_factor


def test_warmup_then_cosine_to_zero():
    factors = [lr_factor(step, total_steps=110, warmup_steps=10, schedule="cosine") for step in range(110)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert factors[10] == pytest.approx(1.0) and factors[60] == pytest.approx(0.5)
    assert factors[-1] == pytest.approx(0.0, abs=1e-3)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:]))


def test_constant_after_warmup():
    assert lr_factor(50, total_steps=100, warmup_steps=0, schedule="constant") == 1.0
    assert lr_factor(4, total_steps=100, warmup_steps=10, schedule="constant") == pytest.approx(0.5)
