"""`/compat/vapi`: Vapi's session and chat routes, shaped as Vapi's OpenAPI document gives
them (src/compat/vapi), for a Vapi client that changes only its base URL and key."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response, status
from fastapi.responses import JSONResponse
from sse_starlette import ServerSentEvent

from src.api.deps import AccountId, Services, ServicesDep
from src.api.event_streams import event_source, turn_events
from src.compat.vapi.errors import (
    VAPI_ERROR_RESPONSES,
    VAPI_PREFIX,
    BadRequest,
    Unmapped,
    VapiRoute,
    vapi_error,
)
from src.compat.vapi.mapping import response_item_id, response_object
from src.compat.vapi.schemas import CreateChat, CreateResponse, CreateSession, UpdateSession
from src.compat.vapi.service import Page, PreparedChat, VapiFace
from src.db.tables import VapiChat
from src.domain import Message
from src.errors import NotFound

router = APIRouter(
    prefix=VAPI_PREFIX, tags=["vapi"], route_class=VapiRoute, responses=VAPI_ERROR_RESPONSES
)

_SESSION_FILTERS = {"assistantId", "squadId"}
_CHAT_FILTERS = {"id", "assistantId", "squadId", "sessionId", "previousChatId"}
_PAGING = {"page", "limit"}


async def vapi_face(services: ServicesDep) -> VapiFace:
    return services.vapi


Face = Annotated[VapiFace, Depends(vapi_face)]


def _page(request: Request, filters: set[str], page: int, limit: int) -> Page:
    """Refuses, by name, the query parameters of Vapi's lists that Parley does not map."""
    if any("\x00" in value for value in request.query_params.values()):
        raise BadRequest("a query parameter contains a NUL character (%00)")
    unknown = sorted(set(request.query_params) - filters - _PAGING)
    if unknown:
        raise Unmapped(
            "Parley's Vapi face does not support the query parameters "
            + ", ".join(f"`{name}`" for name in unknown)
        )
    return Page(page=page, limit=limit)


PageNumber = Annotated[int, Query(ge=1, le=10_000)]
Limit = Annotated[int, Query(ge=1, le=1000)]


# ---- sessions --------------------------------------------------------------------------


@router.post("/session", status_code=status.HTTP_201_CREATED)
async def create_session(body: CreateSession, account: AccountId, face: Face) -> dict[str, Any]:
    """Vapi's CreateSessionDTO → Session: a Parley session on channel `vapi`."""
    return await face.open_session(account, body)


@router.get("/session")
async def list_sessions(
    request: Request,
    account: AccountId,
    face: Face,
    assistant_id: Annotated[str | None, Query(alias="assistantId", max_length=64)] = None,
    squad_id: Annotated[str | None, Query(alias="squadId", max_length=64)] = None,
    page: PageNumber = 1,
    limit: Limit = 100,
) -> dict[str, Any]:
    """Vapi's SessionPaginatedResponse: the sessions opened through the face, newest first."""
    paging = _page(request, _SESSION_FILTERS, page, limit)
    return await face.list_sessions(account, paging, assistant_id, squad_id)


@router.get("/session/{session_id}")
async def get_session(session_id: str, account: AccountId, face: Face) -> dict[str, Any]:
    """Vapi's Session, with its transcript, costs and (once completed) artifact."""
    return await face.session(account, session_id)


@router.patch("/session/{session_id}")
async def update_session(
    session_id: str, body: UpdateSession, account: AccountId, face: Face
) -> dict[str, Any]:
    """Vapi's UpdateSessionDTO: `name`, and `status: "completed"` to end the session."""
    return await face.update_session(account, session_id, body)


@router.delete("/session/{session_id}")
async def delete_session(session_id: str, account: AccountId, face: Face) -> dict[str, Any]:
    """Ends the session and hides it from the face; Parley keeps its record."""
    return await face.delete_session(account, session_id)


# ---- chats -----------------------------------------------------------------------------


@router.post("/chat")
async def create_chat(
    body: CreateChat, account: AccountId, face: Face, services: ServicesDep
) -> Response:
    """One turn. With `stream: true`, server-sent events, each `{"id", "sessionId"?, "path":
    "chat.output[<n>].content", "delta"}` (Vapi's CreateChatStreamResponse)."""
    chat = await face.prepare_chat(account, body)
    if not body.stream:
        return JSONResponse(await face.chat_of(await face.answer(chat)))
    events = await _turn_events(services, face, chat)
    return event_source(_chat_stream(events, chat))


@router.get("/chat")
async def list_chats(
    request: Request,
    account: AccountId,
    face: Face,
    page: PageNumber = 1,
    limit: Limit = 100,
) -> dict[str, Any]:
    """Vapi's ChatPaginatedResponse, newest first; items leave out `messages`."""
    paging = _page(request, _CHAT_FILTERS, page, limit)
    filters = {name: request.query_params.get(name) for name in _CHAT_FILTERS}
    return await face.list_chats(account, paging, filters)


@router.get("/chat/{chat_id}")
async def get_chat(chat_id: str, account: AccountId, face: Face) -> dict[str, Any]:
    """Vapi's Chat: `messages` up to its input, `output` what the turn produced."""
    return await face.chat(account, chat_id)


@router.delete("/chat/{chat_id}")
async def delete_chat(chat_id: str, account: AccountId, face: Face) -> dict[str, Any]:
    """Deletes the chat's record (not its turn in the conversation); Vapi's Chat."""
    return await face.delete_chat(account, chat_id)


@router.post("/chat/responses")
async def create_response(
    body: CreateResponse, account: AccountId, face: Face, services: ServicesDep
) -> Response:
    """A chat answered in OpenAI's Responses shape; streamed (the default) as
    response.output_text.delta, response.output_text.done, response.completed (or error)."""
    chat = await face.prepare_chat(account, body)
    if not body.stream:
        return JSONResponse(face.response_of(await face.answer(chat)))
    events = await _turn_events(services, face, chat)
    return event_source(_response_stream(events, chat))


async def _turn_events(
    services: Services, face: VapiFace, chat: PreparedChat
) -> AsyncIterator[ServerSentEvent]:
    """The turn's events in Parley's stream, from now on, while it is answered."""
    after = await services.streams.head(chat.session_id)
    return turn_events(
        services.streams,
        chat.session_id,
        chat.stream_turn,
        after,
        face.answer_detached(chat),
        _recorded,
    )


def _recorded(row: VapiChat) -> tuple[set[int], dict[str, Any]]:
    # The chat is recorded with its messages: no need to wait for their `message` events.
    return set(), {"output": row.output, "created": row.created_time.isoformat()}


# The HTTP status a plain call would have answered a failed turn with, by Parley's code.
_STATUS_OF_CODE = {
    "not_found": 404,
    "conflict": 409,
    "payload_too_large": 413,
    "invalid_input": 422,
    "agent_error": 502,
    "unavailable": 503,
}


def _error_body(data: dict[str, Any]) -> tuple[str, str]:
    error = data.get("error") or {}
    return str(error.get("code", "internal")), str(error.get("message", "the turn failed"))


@router.api_route(
    "/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False
)
async def unknown_route(path: str, account: AccountId) -> None:
    raise NotFound(
        f"Parley's Vapi face has no route /{path}: it serves /session and /chat (see the "
        "README's Vapi-compatible routes)"
    )


async def _chat_stream(
    events: AsyncIterator[ServerSentEvent], chat: PreparedChat
) -> AsyncIterator[ServerSentEvent]:
    """The turn's text deltas as Vapi's CreateChatStreamResponse; an error as an `error`
    event in Vapi's error shape. Parley's `discard` (a model attempt that died) has no Vapi
    counterpart: the retried attempt's text follows."""
    results_before: list[int] = []  # message_index of each tool result seen
    async for event in events:
        data = json.loads(str(event.data))
        if event.event == "tool_result":
            results_before.append(int(data["message_index"]))
        elif event.event == "message.delta":
            index = int(data["message_index"])
            position = index + sum(1 for i in results_before if i < index)
            delta: dict[str, Any] = {
                "id": chat.chat_id,
                "path": f"chat.output[{position}].content",
                "delta": data["delta"],
            }
            if chat.session_named:
                delta["sessionId"] = chat.session_id
            yield ServerSentEvent(data=json.dumps(delta))
        elif event.event == "error":
            code, message = _error_body(data)
            failed = vapi_error(_STATUS_OF_CODE.get(code, 500), message)
            yield ServerSentEvent(data=bytes(failed.body).decode(), event="error")


async def _response_stream(
    events: AsyncIterator[ServerSentEvent], chat: PreparedChat
) -> AsyncIterator[ServerSentEvent]:
    """OpenAI Responses stream events, as Vapi's document names them."""
    sequence = 0
    streamed: list[int] = []  # the Parley message indexes that streamed text, in order

    def sse(body: dict[str, Any]) -> ServerSentEvent:
        nonlocal sequence
        sequence += 1
        return ServerSentEvent(data=json.dumps(body), event=str(body["type"]))

    async for event in events:
        data = json.loads(str(event.data))
        if event.event == "message.delta":
            index = int(data["message_index"])
            if index not in streamed:
                streamed.append(index)
            yield sse(
                {
                    "type": "response.output_text.delta",
                    "item_id": response_item_id(chat.chat_id, index),
                    "output_index": streamed.index(index),
                    "content_index": 0,
                    "delta": data["delta"],
                }
            )
        elif event.event == "done":
            messages = [Message.model_validate(m) for m in data["output"]]
            response = response_object(chat.chat_id, chat.created, messages)
            for position, item in enumerate(response["output"]):
                yield sse(
                    {
                        "type": "response.output_text.done",
                        "item_id": item["id"],
                        "output_index": position,
                        "content_index": 0,
                        "text": item["content"][0]["text"],
                    }
                )
            yield sse({"type": "response.completed", "response": response})
        elif event.event == "error":
            code, message = _error_body(data)
            yield sse(
                {"type": "error", "code": code, "message": message, "sequence_number": sequence + 1}
            )
