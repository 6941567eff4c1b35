"""`/api/v1/chats`: stateful chat sessions."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Response, status

from src.api.deps import AccountId, ServicesDep, SessionAccount
from src.api.schemas import (
    AuditEventList,
    AuditEventResponse,
    ChatSessionList,
    EndChatRequest,
    ErrorResponse,
    OpenChatRequest,
    SendMessageRequest,
    SendMessageResponse,
)
from src.domain import SessionStatus, SessionView
from src.services.chat_sessions import ChatFilters, OpenChat

router = APIRouter(
    prefix="/chats",
    tags=["chats"],
    responses={
        401: {"model": ErrorResponse},
        404: {"model": ErrorResponse},
        422: {"model": ErrorResponse},
    },
)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses={200: {"model": SessionView, "description": "joined the active session"}},
)
async def open_chat(
    body: OpenChatRequest, account: AccountId, services: ServicesDep, response: Response
) -> SessionView:
    session, created = await services.chats.open(account, OpenChat(**dict(body)))
    if not created:
        response.status_code = status.HTTP_200_OK
    return session


@router.get("")
async def list_chats(
    account: AccountId,
    services: ServicesDep,
    status_filter: Annotated[SessionStatus | None, Query(alias="status")] = None,
    agent_id: str | None = None,
    channel: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> ChatSessionList:
    filters = ChatFilters(status=status_filter, agent_id=agent_id, channel=channel)
    items, next_cursor = await services.chats.list_sessions(account, filters, limit, cursor)
    return ChatSessionList(items=items, next_cursor=next_cursor)


@router.get("/{session_id}")
async def get_chat(session_id: str, account: SessionAccount, services: ServicesDep) -> SessionView:
    return await services.chats.get(account, session_id)


@router.post(
    "/{session_id}/messages",
    responses={
        409: {"model": ErrorResponse},
        413: {"model": ErrorResponse},
        502: {"model": ErrorResponse},
    },
)
async def send_message(
    session_id: str,
    body: SendMessageRequest,
    account: SessionAccount,
    services: ServicesDep,
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=200)] = None,
) -> SendMessageResponse:
    turn = await services.chats.send(account, session_id, body.content, idempotency_key)
    return SendMessageResponse(messages=turn.messages, is_final=turn.is_final)


@router.post("/{session_id}/end")
async def end_chat(
    session_id: str,
    account: AccountId,
    services: ServicesDep,
    body: EndChatRequest | None = None,
) -> SessionView:
    return await services.chats.end(account, session_id, body.note if body else None)


@router.get("/{session_id}/events")
async def list_chat_events(
    session_id: str,
    account: AccountId,
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> AuditEventList:
    """The session's audit log, oldest first: open, messages, tool calls, end request,
    finish steps and every webhook delivery attempt."""
    rows, next_cursor = await services.chats.events(account, session_id, limit, cursor)
    items = [
        AuditEventResponse(id=row.id, kind=row.kind, data=row.data, time=row.time) for row in rows
    ]
    return AuditEventList(items=items, next_cursor=next_cursor)
