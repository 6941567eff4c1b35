"""What Temporal's RPC errors mean to an API caller: which ones say "retry the request"."""

from __future__ import annotations

from temporalio.service import RPCError, RPCStatusCode

from src.errors import Unavailable

# Temporal is down, slow or shedding load: nothing was decided, the same request may be sent
# again.
_RETRYABLE_STATUSES = {
    RPCStatusCode.UNAVAILABLE,
    RPCStatusCode.DEADLINE_EXCEEDED,
    RPCStatusCode.RESOURCE_EXHAUSTED,
}


def temporal_unavailable(error: RPCError) -> bool:
    return error.status in _RETRYABLE_STATUSES


def unavailable() -> Unavailable:
    return Unavailable("Temporal is busy or unavailable; retry the request")
