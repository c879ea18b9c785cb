"""Kubernetes quantities and OSMO durations, parsed strictly with messages that say how to fix."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

__all__ = ("QuantityError", "format_bytes", "parse_bytes", "parse_cpu", "parse_duration")


class QuantityError(ValueError):
    """The message says what a valid value looks like."""


_SUFFIX = {
    "": 1,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
    "k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
}  # fmt: skip
_QUANTITY = re.compile(
    r"^([0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|k|K|M|G|T|P|E)?$"
)


def parse_bytes(value: object, what: str = "memory") -> int:
    """``4Gi`` → 4294967296; plain integers are bytes, as in Kubernetes."""
    if isinstance(value, bool):
        raise QuantityError(f"{what} must be a quantity such as 512Mi or 4Gi, not {value!r}")
    if isinstance(value, int):
        amount = Decimal(value)
    elif isinstance(value, float):
        amount = Decimal(repr(value))
    elif isinstance(value, str) and (m := _QUANTITY.match(value.strip())):
        try:
            amount = Decimal(m.group(1)) * _SUFFIX[m.group(2) or ""]
        except InvalidOperation:
            raise QuantityError(f"{what} {value!r} is not a number") from None
    else:
        raise QuantityError(
            f"{what} {value!r} is not a Kubernetes quantity; write it like 512Mi, 4Gi or 1073741824"
        )
    if amount < 0:
        raise QuantityError(f"{what} must not be negative")
    return int(amount.to_integral_value(rounding="ROUND_CEILING"))


def parse_cpu(value: object) -> float:
    """CPU cores: an integer, a decimal, or millicores like ``500m``."""
    if isinstance(value, bool):
        raise QuantityError(f"cpu must be a number of cores such as 1, 0.5 or 500m, not {value!r}")
    if isinstance(value, int | float):
        cores = float(value)
    elif isinstance(value, str) and re.fullmatch(r"[0-9]+m", value.strip()):
        cores = int(value.strip()[:-1]) / 1000
    elif isinstance(value, str) and re.fullmatch(r"[0-9]+(\.[0-9]+)?", value.strip()):
        cores = float(value)
    else:
        raise QuantityError(f"cpu {value!r} is not a number of cores; write it like 1, 0.5 or 500m")
    if cores < 0:
        raise QuantityError("cpu must not be negative")
    return cores


_DURATION = re.compile(r"^([0-9]+)([smhd])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: object, what: str) -> int:
    """``10m`` → 600 seconds. One unit only (s, m, h, d), as OSMO requires; integers are seconds."""
    if isinstance(value, bool):
        raise QuantityError(f"{what} must be a duration such as 30s, 10m, 2h or 1d")
    if isinstance(value, int):
        seconds = value
    elif isinstance(value, str) and (m := _DURATION.match(value.strip())):
        seconds = int(m.group(1)) * _UNIT[m.group(2)]
    else:
        raise QuantityError(
            f"{what} {value!r} is not a duration; write one number and one unit, such as "
            "30s, 10m, 2h or 1d (units cannot be mixed)"
        )
    if seconds <= 0:
        raise QuantityError(f"{what} must be longer than zero")
    return seconds


def format_bytes(n: int) -> str:
    for suffix in ("Ei", "Pi", "Ti", "Gi", "Mi", "Ki"):
        size = _SUFFIX[suffix]
        if n >= size and n % size == 0:
            return f"{n // size}{suffix}"
    for suffix in ("Ti", "Gi", "Mi", "Ki"):
        size = _SUFFIX[suffix]
        if n >= size:
            return f"{n / size:.1f}{suffix}"
    return str(n)
