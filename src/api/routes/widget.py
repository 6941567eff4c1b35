"""`/api/v1/widget-keys`: an account's publishable widget keys (secret API key only), and
`/api/v1/widget/sessions`: the widget opening or resuming its visitor's web session with one."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from src.api.deps import AccountId, CallerPrincipal, ServicesDep
from src.api.schemas import (
    CreatedWidgetKeyResponse,
    CreateWidgetKeyRequest,
    ErrorResponse,
    OpenWidgetSessionRequest,
    WidgetKeyList,
    WidgetKeyResponse,
    WidgetSessionResponse,
)
from src.errors import Forbidden
from src.services.chat_sessions import OpenChat
from src.widget.access import WIDGET_CHANNEL
from src.widget.origins import parse_origin_pattern

keys_router = APIRouter(
    prefix="/widget-keys",
    tags=["widget"],
    responses={401: {"model": ErrorResponse}, 403: {"model": ErrorResponse}},
)
sessions_router = APIRouter(
    prefix="/widget",
    tags=["widget"],
    responses={
        401: {"model": ErrorResponse},
        403: {"model": ErrorResponse},
        404: {"model": ErrorResponse},
    },
)


@keys_router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses={404: {"model": ErrorResponse}, 422: {"model": ErrorResponse}},
)
async def create_widget_key(
    body: CreateWidgetKeyRequest, account: AccountId, services: ServicesDep
) -> CreatedWidgetKeyResponse:
    """A publishable key for one of the account's agents, usable from `allowed_origins` only.
    The key is in this answer only; it is stored hashed."""
    origins = [parse_origin_pattern(origin) for origin in body.allowed_origins]
    record, key = await services.widget_keys.create(account, body.agent_id, origins)
    return CreatedWidgetKeyResponse(**record.model_dump(), key=key)


@keys_router.get("")
async def list_widget_keys(
    account: AccountId,
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> WidgetKeyList:
    items, next_cursor = await services.widget_keys.list(account, limit, cursor)
    return WidgetKeyList(
        items=[WidgetKeyResponse(**item.model_dump()) for item in items], next_cursor=next_cursor
    )


@keys_router.get("/{key_id}", responses={404: {"model": ErrorResponse}})
async def get_widget_key(
    key_id: str, account: AccountId, services: ServicesDep
) -> WidgetKeyResponse:
    return WidgetKeyResponse(**(await services.widget_keys.get(account, key_id)).model_dump())


@keys_router.delete(
    "/{key_id}", status_code=status.HTTP_204_NO_CONTENT, responses={404: {"model": ErrorResponse}}
)
async def delete_widget_key(key_id: str, account: AccountId, services: ServicesDep) -> None:
    """The key stops working (in other API processes within PARLEY_API_KEY_CACHE_SECONDS);
    its visitors' sessions stay readable with the secret key."""
    await services.widget_keys.delete(account, key_id)


@sessions_router.post(
    "/sessions",
    status_code=status.HTTP_201_CREATED,
    responses={
        200: {"model": WidgetSessionResponse, "description": "joined the visitor's session"},
        429: {"model": ErrorResponse},
    },
)
async def open_widget_session(
    body: OpenWidgetSessionRequest,
    caller: CallerPrincipal,
    services: ServicesDep,
    response: Response,
) -> WidgetSessionResponse:
    """With a publishable key (`pw_...`) from an allowed Origin: a new visitor (no token) gets
    a token and a new web session; a known one gets its active session back, transcript and
    all (every tab and reload of one browser joins it), or a new one once the last is final."""
    widget = caller.widget
    if widget is None:
        raise Forbidden("widget sessions are opened with a publishable widget key (pw_...)")
    if body.visitor_token is None:
        visitor_id, token = services.widget_gate.tokens.issue(widget.key_id)
    else:
        token = body.visitor_token
        visitor_id = await services.widget_gate.visitor(widget.key_id, token)
    request = OpenChat(
        agent_id=widget.agent_id,
        channel=WIDGET_CHANNEL,
        external_id=widget.external_id(visitor_id),
    )
    session, created = await services.chats.open(caller.account_id, request)
    if not created:
        response.status_code = status.HTTP_200_OK
    return WidgetSessionResponse(visitor_token=token, session=session)
