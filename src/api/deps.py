"""FastAPI dependencies: the services built at startup, and the caller's account."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client

from src.config import Settings
from src.errors import Unauthorized
from src.services.accounts import ApiKeyAuthenticator
from src.services.active_sessions import ActiveSessionsCount
from src.services.agents import AgentService
from src.services.chat_sessions import ChatSessionService
from src.services.rate_limits import RequestRateLimiter
from src.services.session_streams import SessionStreams
from src.services.text_chat import TextChatService

# Where the front door (src/api/front_door.py) leaves the account it authenticated.
ACCOUNT_SCOPE_KEY = "parley.account_id"


@dataclass
class Services:
    settings: Settings
    engine: AsyncEngine
    temporal: Client
    authenticator: ApiKeyAuthenticator
    rate_limiter: RequestRateLimiter
    active_sessions: ActiveSessionsCount
    agents: AgentService
    chats: ChatSessionService
    text_chat: TextChatService
    streams: SessionStreams


def _services_of(request: Request) -> Services:
    found: Services = request.app.state.services
    return found


async def services(request: Request) -> Services:
    # async: FastAPI runs a plain `def` dependency in its thread pool, a thread hop per request.
    return _services_of(request)


def bearer_key(authorization: str | None) -> str | None:
    """The key of an `Authorization: Bearer <key>` header; None when there is no header."""
    if authorization is None or not authorization.strip():
        return None
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        # The value is not echoed: it is most likely the key itself.
        raise Unauthorized("the Authorization header must be 'Bearer <key>'")
    return value.strip() or None


async def current_account(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> str:
    known = request.scope.get(ACCOUNT_SCOPE_KEY)
    if isinstance(known, str):
        return known
    return await _services_of(request).authenticator.account_for(bearer_key(authorization))


AccountId = Annotated[str, Depends(current_account)]
ServicesDep = Annotated[Services, Depends(services)]
