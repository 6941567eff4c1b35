"""FastAPI dependencies: the services built at startup, and the caller's account."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client

from src.config import Settings
from src.services.accounts import ApiKeyAuthenticator
from src.services.agents import AgentService
from src.services.chat_sessions import ChatSessionService
from src.services.text_chat import TextChatService


@dataclass
class Services:
    settings: Settings
    engine: AsyncEngine
    temporal: Client
    authenticator: ApiKeyAuthenticator
    agents: AgentService
    chats: ChatSessionService
    text_chat: TextChatService


def _services_of(request: Request) -> Services:
    found: Services = request.app.state.services
    return found


async def services(request: Request) -> Services:
    # async: FastAPI runs a plain `def` dependency in its thread pool, a thread hop per request.
    return _services_of(request)


async def current_account(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> str:
    token = None
    if authorization:
        scheme, _, value = authorization.partition(" ")
        token = value.strip() if scheme.lower() == "bearer" else None
    return await _services_of(request).authenticator.account_for(token)


AccountId = Annotated[str, Depends(current_account)]
ServicesDep = Annotated[Services, Depends(services)]
