"""Quantities, durations, and the runner's Kubernetes-style $(VAR) expansion."""

from __future__ import annotations

import pytest

from app.spec.quantities import QuantityError, parse_bytes, parse_cpu, parse_duration
from runner.executors.base import expand_vars


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1Gi", 2**30),
        ("512Mi", 512 * 2**20),
        ("1G", 10**9),
        (1073741824, 2**30),
        ("1.5Gi", 3 * 2**29),
        ("1e3", 1000),
    ],
)
def test_bytes(text: object, value: int) -> None:
    assert parse_bytes(text) == value


@pytest.mark.parametrize("text", ["1 GB", "lots", True, "-1", "1XB"])
def test_bad_bytes(text: object) -> None:
    with pytest.raises(QuantityError):
        parse_bytes(text)


def test_cpu_and_durations() -> None:
    assert parse_cpu("500m") == 0.5
    assert parse_cpu(2) == 2.0
    assert parse_duration("10m", "exec_timeout") == 600
    assert parse_duration(30, "exec_timeout") == 30
    with pytest.raises(QuantityError):
        parse_duration("1h30m", "exec_timeout")
    with pytest.raises(QuantityError):
        parse_duration("0s", "exec_timeout")


def test_dollar_paren_expansion_follows_kubernetes() -> None:
    env = {"FILE_PATH": "/tmp/run.sh", "A": "x"}
    assert expand_vars("$(FILE_PATH)", env) == "/tmp/run.sh"
    assert expand_vars("pre-$(A)-post", env) == "pre-x-post"
    assert expand_vars("$(UNDEFINED)", env) == "$(UNDEFINED)"
    assert expand_vars("$$(A)", env) == "$(A)"
    assert expand_vars("echo $HOME", env) == "echo $HOME"
