"""Fault injection settings of the local server and the pure decision of which faults hit a request.

Each HTTP-level fault has its own rate and its own scope: the endpoints it applies to,
"submit" (longRunningRecognize), "operation" (GET /operations/{id}) or both. The random draws
come from a caller-supplied function so that a seeded `random.Random` makes runs reproducible.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from speechkit_local import logic

SUBMIT = "submit"
OPERATION = "operation"
ENDPOINTS = (SUBMIT, OPERATION)
BOTH_ENDPOINTS = ENDPOINTS  # a fault applies everywhere unless scoped

DEFAULT_ERROR_STATUS = 500  # the most common server-side failure
DEFAULT_RETRY_AFTER_SECONDS = 1  # short, so tests honouring it stay fast
# Done operations that are not what the documentation promises (exactly one of a `response`
# object or an `error` object): what a garbling proxy or a changed API could answer.
MALFORMED_KINDS = ("no_response", "null_response", "chunks_not_list", "error_string")


@dataclass(frozen=True)
class FaultSettings:
    """What goes wrong, how often (0.0 never .. 1.0 always) and where.

    Order within one request: slow, drop, auth_fail, rate limit, error. Injected errors and
    rate limits come before any operation exists (not billed); a drop on submit happens before
    the operation is created unless `drop_after_create` (then the answer is lost but the
    operation exists and is billed).
    """

    error_rate: float = 0.0
    error_status: int = DEFAULT_ERROR_STATUS  # 500 (13), 503 (14), 504 (4) or 400 (3)
    error_endpoints: tuple[str, ...] = BOTH_ENDPOINTS
    rate_limit_rate: float = 0.0
    retry_after_seconds: int = DEFAULT_RETRY_AFTER_SECONDS
    rate_limit_endpoints: tuple[str, ...] = BOTH_ENDPOINTS
    slow_rate: float = 0.0
    slow_seconds: float = 0.0
    slow_endpoints: tuple[str, ...] = BOTH_ENDPOINTS
    drop_rate: float = 0.0
    drop_after_create: bool = False
    drop_endpoints: tuple[str, ...] = BOTH_ENDPOINTS
    operation_error_rate: float = 0.0  # good audio, yet the operation ends in `error`
    # The gRPC code of that error: 3 "Invalid audio received" (the input), or the service's own
    # trouble (4, 8, 10, 13, 14), after which a client may submit again.
    operation_error_code: int = logic.CODE_INVALID_ARGUMENT
    # The next this many operations end in that error whatever the rate (a countdown, so a test
    # can say "fail once, then succeed" without depending on random draws).
    operation_error_next: int = 0
    # The next this many operations answer every status check after they are done with a
    # malformed operation of this kind (one of MALFORMED_KINDS) instead of their result.
    malformed_kind: str = MALFORMED_KINDS[0]
    malformed_next: int = 0
    auth_fail: bool = False  # every API request 401, as with a revoked key

    def to_json(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        for name, value in values.items():
            if isinstance(value, tuple):
                values[name] = list(value)
        return values


_RATE_FIELDS = frozenset(
    {"error_rate", "rate_limit_rate", "slow_rate", "drop_rate", "operation_error_rate"}
)
_ENDPOINT_FIELDS = frozenset(
    {"error_endpoints", "rate_limit_endpoints", "slow_endpoints", "drop_endpoints"}
)
_BOOLEAN_FIELDS = frozenset({"drop_after_create", "auth_fail"})


def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"fault {name!r}: expected a number, got {value!r}")
    return float(value)


def _endpoints(name: str, value: object) -> tuple[str, ...]:
    if value == "both":
        return BOTH_ENDPOINTS
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(item in ENDPOINTS for item in items):
        raise ValueError(
            f'fault {name!r}: expected "submit", "operation", "both" or a list of them, '
            f"got {value!r}"
        )
    return tuple(endpoint for endpoint in ENDPOINTS if endpoint in items)


def merge_fault_settings(current: FaultSettings, changes: Mapping[str, object]) -> FaultSettings:
    """`current` with `changes` applied; ValueError naming the first bad key or value."""
    known = {field.name for field in dataclasses.fields(FaultSettings)}
    values: dict[str, Any] = {}
    for name, value in changes.items():
        if name not in known:
            raise ValueError(f"unknown fault setting {name!r}; known: {', '.join(sorted(known))}")
        if name in _RATE_FIELDS:
            rate = _number(name, value)
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"fault {name!r}: a rate is between 0 and 1, got {value!r}")
            values[name] = rate
        elif name in _ENDPOINT_FIELDS:
            values[name] = _endpoints(name, value)
        elif name in _BOOLEAN_FIELDS:
            if not isinstance(value, bool):
                raise ValueError(f"fault {name!r}: expected true or false, got {value!r}")
            values[name] = value
        elif name == "error_status":
            if value not in logic.INJECTABLE_ERRORS or isinstance(value, bool):
                choices = ", ".join(str(status) for status in logic.INJECTABLE_ERRORS)
                raise ValueError(f"fault 'error_status': expected one of {choices}, got {value!r}")
            values[name] = value
        elif name == "operation_error_code":
            if isinstance(value, bool) or value not in logic.OPERATION_ERRORS:
                codes = ", ".join(str(code) for code in logic.OPERATION_ERRORS)
                raise ValueError(
                    f"fault 'operation_error_code': expected one of {codes}, got {value!r}"
                )
            values[name] = value
        elif name == "operation_error_next":
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(
                    f"fault 'operation_error_next': expected a whole number >= 0, got {value!r}"
                )
            values[name] = value
        elif name == "malformed_kind":
            if value not in MALFORMED_KINDS:
                kinds = ", ".join(MALFORMED_KINDS)
                raise ValueError(f"fault 'malformed_kind': expected one of {kinds}, got {value!r}")
            values[name] = value
        elif name == "malformed_next":
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(
                    f"fault 'malformed_next': expected a whole number >= 0, got {value!r}"
                )
            values[name] = value
        elif name == "retry_after_seconds":
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(
                    f"fault 'retry_after_seconds': expected a whole number >= 0, got {value!r}"
                )
            values[name] = value
        else:  # slow_seconds
            seconds = _number(name, value)
            if seconds < 0:
                raise ValueError(f"fault {name!r}: expected >= 0, got {value!r}")
            values[name] = seconds
    return dataclasses.replace(current, **values)


@dataclass(frozen=True)
class FaultDecision:
    """The faults that hit one request."""

    slow_seconds: float = 0.0
    drop: bool = False
    rate_limited: bool = False
    error_status: int | None = None


def decide_faults(faults: FaultSettings, endpoint: str, draw: Callable[[], float]) -> FaultDecision:
    """Roll each fault scoped to `endpoint` once, in a fixed order.

    A fault with rate 0 or out of scope draws nothing, so enabling one fault does not shift
    the random sequence of another that is off.
    """

    def hits(rate: float, scope: tuple[str, ...]) -> bool:
        return rate > 0.0 and endpoint in scope and draw() < rate

    slow = hits(faults.slow_rate, faults.slow_endpoints)
    drop = hits(faults.drop_rate, faults.drop_endpoints)
    rate_limited = hits(faults.rate_limit_rate, faults.rate_limit_endpoints)
    error = hits(faults.error_rate, faults.error_endpoints)
    return FaultDecision(
        slow_seconds=faults.slow_seconds if slow else 0.0,
        drop=drop,
        rate_limited=rate_limited,
        error_status=faults.error_status if error else None,
    )


def malformed_answer(operation: Mapping[str, Any], kind: str) -> dict[str, Any]:
    """A done `operation` answered as `kind` (one of MALFORMED_KINDS) instead of as it is."""
    answer = {name: value for name, value in operation.items() if name not in ("response", "error")}
    answer["done"] = True
    if kind == "null_response":
        answer["response"] = None
    elif kind == "chunks_not_list":
        answer["response"] = {"@type": logic.RESPONSE_TYPE, "chunks": "not a list"}
    elif kind == "error_string":
        answer["error"] = "Invalid audio received"
    elif kind != "no_response":
        raise ValueError(f"unknown malformed kind {kind!r}")
    return answer
