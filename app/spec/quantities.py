"""Kubernetes quantities and OSMO durations, parsed strictly with messages that say how to fix."""

from __future__ import annotations

import math
import re
from decimal import Decimal

__all__ = (
    "MAX_CPU",
    "MAX_DURATION",
    "MAX_GPU",
    "MAX_MEMORY",
    "MAX_STORAGE",
    "QuantityError",
    "format_bytes",
    "format_duration",
    "parse_bytes",
    "parse_cpu",
    "parse_duration",
    "parse_gpu",
)

# Upper bounds for one task, above what any machine a cluster could hold has today (the
# largest servers have under 1,000 cores, 16 GPUs and 32 TiB of memory): past them a value
# is a mistake or an attack, and would overflow the database's integers or wait for ever.
MAX_CPU = 1024.0  # cores
MAX_GPU = 1024
MAX_MEMORY = 64 * 2**40  # 64Ti
MAX_STORAGE = 2**50  # 1Pi
MAX_DURATION = 365 * 86400  # a year, in seconds (exec_timeout, queue_timeout)
_MAX_BYTES = {"memory": MAX_MEMORY, "storage": MAX_STORAGE}


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
        amount = Decimal(repr(value))  # nan and inf are refused below
    elif isinstance(value, str) and (m := _QUANTITY.match(value.strip())):
        try:
            amount = Decimal(m.group(1)) * _SUFFIX[m.group(2) or ""]
        except ArithmeticError:  # 1e999999999 overflows the decimal context
            raise QuantityError(f"{what} {value!r} is not a number Gantry can hold") from None
    else:
        raise QuantityError(
            f"{what} {value!r} is not a Kubernetes quantity; write it like 512Mi, 4Gi or 1073741824"
        )
    if not amount.is_finite():
        raise QuantityError(f"{what} must be a finite quantity, not {value!r}")
    if amount < 0:
        raise QuantityError(f"{what} must not be negative")
    maximum = _MAX_BYTES.get(what, MAX_MEMORY)
    if amount > maximum:  # compared before int(): 1e999999 would take seconds to convert
        raise QuantityError(
            f"{what} {value!r} is more than one task may ask for (at most {format_bytes(maximum)})"
        )
    return int(amount.to_integral_value(rounding="ROUND_CEILING"))


def parse_gpu(value: object) -> int:
    """A whole number of GPUs, 0 to MAX_GPU."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise QuantityError(f"gpu must be a whole number of GPUs (0, 1, 2, ...), not {value!r}")
    if value > MAX_GPU:
        raise QuantityError(f"gpu {value} is more than one task may ask for (at most {MAX_GPU})")
    return value


def parse_cpu(value: object) -> float:
    """CPU cores: an integer, a decimal, or millicores like ``500m``."""
    if isinstance(value, bool):
        raise QuantityError(f"cpu must be a number of cores such as 1, 0.5 or 500m, not {value!r}")
    if isinstance(value, int) and abs(value) > MAX_CPU:
        cores = -1.0 if value < 0 else MAX_CPU + 1  # float() of a 400-digit int overflows
    elif isinstance(value, int | float):
        cores = float(value)
    elif isinstance(value, str) and re.fullmatch(r"[0-9]{1,15}m", value.strip()):
        cores = int(value.strip()[:-1]) / 1000
    elif isinstance(value, str) and re.fullmatch(r"[0-9]+(\.[0-9]+)?", value.strip()):
        cores = float(value)
    else:
        raise QuantityError(f"cpu {value!r} is not a number of cores; write it like 1, 0.5 or 500m")
    if not math.isfinite(cores):  # `.nan` compares false with everything and never fits
        raise QuantityError(f"cpu must be a finite number of cores, not {value!r}")
    if cores < 0:
        raise QuantityError("cpu must not be negative")
    if cores > MAX_CPU:
        raise QuantityError(
            f"cpu {value!r} is more than one task may ask for (at most {MAX_CPU:g} cores)"
        )
    return cores


_DURATION = re.compile(r"^([0-9]{1,15})([smhd])$")  # int() refuses over 4,300 digits
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
    if seconds > MAX_DURATION:
        raise QuantityError(f"{what} {value!r} is longer than a workflow may take (at most 365d)")
    return seconds


def format_duration(seconds: int) -> str:
    """600 → ``10m``: the largest unit that says it exactly, as specs write durations."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


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
