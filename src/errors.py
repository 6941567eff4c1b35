"""Domain errors. The API maps each to one HTTP status in one exception handler."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


class ParleyError(Exception):
    status_code = 500
    code = "internal_error"

    def __init__(self, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class BadState(ParleyError):
    """A stateless conversation's state that cannot be trusted (tampered, foreign, stale)."""

    status_code = 400
    code = "invalid_state"


class Unauthorized(ParleyError):
    status_code = 401
    code = "unauthorized"


class Forbidden(ParleyError):
    """A valid credential that may not do this (a publishable widget key off its routes or
    from an origin it does not allow)."""

    status_code = 403
    code = "forbidden"


class NotFound(ParleyError):
    status_code = 404
    code = "not_found"


class Conflict(ParleyError):
    status_code = 409
    code = "conflict"


class PayloadTooLarge(ParleyError):
    status_code = 413
    code = "payload_too_large"


class UnsupportedMediaType(ParleyError):
    status_code = 415
    code = "unsupported_media_type"


class RateLimited(ParleyError):
    """Too many requests with one API key; the response says when to retry (Retry-After)."""

    status_code = 429
    code = "rate_limited"


class QuotaExceeded(ParleyError):
    """An account is at one of its limits (e.g. active sessions); retry once it is not."""

    status_code = 429
    code = "quota_exceeded"


class InvalidInput(ParleyError):
    status_code = 422
    code = "invalid_input"


class AgentFailed(ParleyError):
    """The agent's model refused or could not be reached for this turn; the session goes on."""

    status_code = 502
    code = "agent_error"


class Unavailable(ParleyError):
    """A dependency (Temporal, the database) is down; the client may retry the same request."""

    status_code = 503
    code = "unavailable"


def log_if_server_side(error: ParleyError, where: str) -> None:
    """A 5xx answer tells the client to retry; the operator's log says why (an overloaded
    worker, Temporal away). Domain messages carry no request content. Every face that turns
    domain errors into answers calls this."""
    if error.status_code >= 500:
        log.warning("%s answered %d: %s", where, error.status_code, error.message)


def describe_validation_error(error: ValueError) -> str:
    """A pydantic ValidationError as one line naming the fields; other errors as they are."""
    from pydantic import ValidationError

    if not isinstance(error, ValidationError):
        return str(error)
    return "; ".join(
        f"{'.'.join(str(part) for part in problem['loc']) or '(root)'}: {problem['msg']}"
        for problem in error.errors()[:5]
    )
