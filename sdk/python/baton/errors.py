"""Exceptions raised by the SDK.

Every refusal from Baton is an RFC 9457 problem document; :class:`BatonError` carries its
fields, and its subclasses let callers catch a family of refusals by HTTP status.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Type

__all__ = [
    "BatonError",
    "InvalidRequest",
    "Unauthorized",
    "Forbidden",
    "NotFound",
    "Conflict",
    "Unavailable",
    "ConnectionFailed",
    "NonRetryable",
    "error_from_response",
]


class BatonError(Exception):
    """A request Baton refused, or could not be asked.

    Attributes mirror the problem document: ``status`` (HTTP status, 0 when no answer came),
    ``code`` (stable machine-readable code such as ``cycle`` or ``stale_lease``), ``detail``
    (human-readable), ``field`` (the request field at fault, e.g. ``tasks[0].retry.max_attempts``),
    ``expected`` (what was expected instead), ``rule`` and ``state`` (for refused lifecycle
    events), ``cycle`` (task keys of a dependency cycle) and ``problem`` (the whole document).
    """

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        field: Optional[str] = None,
        expected: Optional[str] = None,
        rule: Optional[str] = None,
        state: Optional[str] = None,
        cycle: Optional[List[str]] = None,
        problem: Optional[Mapping[str, Any]] = None,
    ) -> None:
        super().__init__(f"{status} {code}: {detail}" if status else f"{code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.field = field
        self.expected = expected
        self.rule = rule
        self.state = state
        self.cycle = cycle
        self.problem: Dict[str, Any] = dict(problem or {})


class InvalidRequest(BatonError):
    """The request was malformed or a field was out of bounds (400, 413, 415, 422)."""


class Unauthorized(BatonError):
    """No valid bearer token was sent (401)."""


class Forbidden(BatonError):
    """The token's role may not do this (403)."""


class NotFound(BatonError):
    """No such task, workflow, agent or endpoint (404)."""


class Conflict(BatonError):
    """The request conflicts with the task's state (409).

    Common codes: ``stale_lease`` (a newer assignment exists), ``task_cancelled``,
    ``not_accepted`` (the state does not accept the event), ``guard_failed``,
    ``idempotency_mismatch``.
    """


class Unavailable(BatonError):
    """Baton is busy, shutting down or cannot reach its store (503); retrying later may work.

    ``retry_after`` is the server's hint in seconds, when it sent one.
    """

    retry_after: Optional[float] = None


class RateLimited(Unavailable):
    """The token sent more requests per second than the server allows (429, ``rate_limited``);
    ``retry_after`` says when to try again."""


class ConnectionFailed(BatonError):
    """Baton could not be reached, or the connection broke (``status`` 0)."""


class NonRetryable(Exception):
    """Raised by a task handler to fail the task for good, whatever attempts are left.

    ``kind`` is the error kind reported to Baton (default: the exception's class name).
    """

    def __init__(self, message: str = "", *, kind: Optional[str] = None) -> None:
        super().__init__(message)
        self.kind = kind


_BY_STATUS: Dict[int, Type[BatonError]] = {
    400: InvalidRequest,
    408: Unavailable,
    429: RateLimited,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: InvalidRequest,
    415: InvalidRequest,
    422: InvalidRequest,
    503: Unavailable,
}


def error_from_response(
    status: int, body: Any, headers: Optional[Mapping[str, str]] = None
) -> BatonError:
    """Builds the exception for an error response from its status and decoded body.

    ``body`` is the decoded problem document, or the raw text when the answer was not one.
    """
    cls = _BY_STATUS.get(status, BatonError)
    if isinstance(body, Mapping) and isinstance(body.get("code"), str):
        cycle = body.get("cycle")
        err = cls(
            status,
            body["code"],
            str(body.get("detail", "")),
            field=_opt_str(body.get("field")),
            expected=_opt_str(body.get("expected")),
            rule=_opt_str(body.get("rule")),
            state=_opt_str(body.get("state")),
            cycle=[str(k) for k in cycle] if isinstance(cycle, list) else None,
            problem=body,
        )
    else:
        text = body if isinstance(body, str) else repr(body)
        err = cls(status, f"http_{status}", text[:500])
    if isinstance(err, Unavailable) and headers is not None:
        try:
            err.retry_after = float(headers.get("retry-after", ""))
        except ValueError:
            pass
    return err


def _opt_str(value: Any) -> Optional[str]:
    return value if isinstance(value, str) else None
