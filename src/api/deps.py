"""FastAPI dependencies: the services built at startup, and the caller's account."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client

from src.compat.osvi import OsviChat
from src.compat.vapi.service import VapiFace
from src.config import Settings
from src.errors import Forbidden, Unauthorized
from src.services.accounts import ApiKeyAuthenticator
from src.services.active_sessions import ActiveSessionsCount
from src.services.agents import AgentService
from src.services.chat_sessions import ChatSessionService
from src.services.phone_numbers import PhoneNumberService
from src.services.rate_limits import RequestRateLimiter
from src.services.session_streams import SessionStreams
from src.services.squads import SquadService
from src.services.text_chat import TextChatService
from src.sms.channel import SmsChannel
from src.sms.status_callbacks import DeliveryStatuses
from src.widget.access import Principal, WidgetGate
from src.widget.keys import WidgetKeyService

# Where the front door (src/api/front_door.py) leaves the account it authenticated, and the
# whole principal (with the widget scope of a publishable key).
ACCOUNT_SCOPE_KEY = "parley.account_id"
PRINCIPAL_SCOPE_KEY = "parley.principal"


@dataclass
class Services:
    settings: Settings
    engine: AsyncEngine
    temporal: Client
    authenticator: ApiKeyAuthenticator
    rate_limiter: RequestRateLimiter
    active_sessions: ActiveSessionsCount
    agents: AgentService
    squads: SquadService
    chats: ChatSessionService
    text_chat: TextChatService
    widget_keys: WidgetKeyService
    widget_gate: WidgetGate
    streams: SessionStreams
    phone_numbers: PhoneNumberService
    sms: SmsChannel
    sms_status: DeliveryStatuses
    osvi: OsviChat
    vapi: VapiFace


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


async def current_principal(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> Principal:
    known = request.scope.get(PRINCIPAL_SCOPE_KEY)
    if isinstance(known, Principal):
        return known
    account_id = await _services_of(request).authenticator.account_for(bearer_key(authorization))
    return Principal(account_id=account_id)


async def current_account(principal: Annotated[Principal, Depends(current_principal)]) -> str:
    """The account of a secret API key; a publishable widget key is refused (the front door
    refuses it first, on every route not open to it)."""
    if principal.widget is not None:
        raise Forbidden("this route needs a secret API key, not a publishable widget key")
    return principal.account_id


async def session_account(
    request: Request,
    session_id: str,
    principal: Annotated[Principal, Depends(current_principal)],
) -> str:
    """The account of a route on one chat session (`{session_id}` in its path), for a secret
    key or for a widget key of the session's own visitor: the one check of widget scope on
    session routes (another visitor's session is a 404, like another account's)."""
    await _services_of(request).widget_gate.check_session(principal, session_id)
    return principal.account_id


AccountId = Annotated[str, Depends(current_account)]
CallerPrincipal = Annotated[Principal, Depends(current_principal)]
SessionAccount = Annotated[str, Depends(session_account)]
ServicesDep = Annotated[Services, Depends(services)]
