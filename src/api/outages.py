"""What counts as the database being unreachable, for the error handlers of every face."""

from __future__ import annotations

from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

# The database is down or out of connections: a dependency outage, answered with a 503.
DATABASE_UNREACHABLE: tuple[type[Exception], ...] = (
    OperationalError,
    InterfaceError,
    PoolTimeoutError,
    ConnectionError,
)
DATABASE_UNREACHABLE_MESSAGE = "the database is unavailable; retry the request"
