"""`/api/v1/chats`: stateful chat sessions."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Request, Response, status
from fastapi.responses import JSONResponse

from src.api.deps import AccountId, ServicesDep, SessionAccount
from src.api.event_streams import (
    EVENT_STREAM,
    conversation_events,
    event_source,
    resume_position,
    turn_events,
    wants_event_stream,
)
from src.api.schemas import (
    AddContextRequest,
    ApprovalRequest,
    ApprovalResponse,
    AuditEventList,
    AuditEventResponse,
    ChatSessionList,
    ContextResponse,
    EndChatRequest,
    ErrorResponse,
    HandbackRequest,
    OpenChatRequest,
    OperatorMessageRequest,
    OperatorMessageResponse,
    SendMessageRequest,
    SendMessageResponse,
    TakeoverRequest,
    WhisperRequest,
)
from src.domain import SessionMode, SessionStatus, SessionView
from src.services.chat_sessions import ChatFilters, OpenChat
from src.sms.phone_numbers import TWILIO_SMS
from src.workflows.chat_session_models import TurnResult

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
    if body.channel == TWILIO_SMS:  # a text sent first: to a person who may be texted
        await services.sms.check_outbound(account, body.external_id)
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
    response_model=SendMessageResponse,
    responses={
        200: {
            "content": {EVENT_STREAM: {}},
            "description": "With `Accept: text/event-stream`: the turn's events as they "
            "come (message.delta, tool_call, tool_result, message, discard), then `done` "
            "with this body, or `error`.",
        },
        202: {
            "model": SendMessageResponse,
            "description": "An operator holds the session: the message is recorded, the "
            'agent does not answer (`"mode": "human"`, no messages).',
        },
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
    request: Request,
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=200)] = None,
) -> SendMessageResponse | Response:
    chats = services.chats
    if not wants_event_stream(request):
        turn = await chats.send(account, session_id, body.content, idempotency_key)
        reply = SendMessageResponse(messages=turn.messages, is_final=turn.is_final, mode=turn.mode)
        if turn.mode == SessionMode.HUMAN:  # recorded; an operator answers, in their time
            return JSONResponse(reply.model_dump(mode="json"), status.HTTP_202_ACCEPTED)
        return reply
    workflow_id = await chats.check_send(account, session_id, body.content, idempotency_key)
    request_id = str(uuid.uuid4())
    turn_id = idempotency_key or request_id
    # A retry with the key joins its turn's events from the start; a new message needs only
    # the events from now on.
    after = 0 if idempotency_key else await services.streams.head(session_id)
    answer = chats.deliver(
        account, session_id, workflow_id, body.content, idempotency_key, request_id
    )
    return event_source(
        turn_events(services.streams, session_id, turn_id, after, answer, _recorded_turn)
    )


def _recorded_turn(turn: TurnResult) -> tuple[set[int], dict[str, Any]]:
    done = SendMessageResponse(messages=turn.messages, is_final=turn.is_final, mode=turn.mode)
    return set(range(turn.first_seq, turn.first_seq + turn.count)), done.model_dump(mode="json")


@router.get(
    "/{session_id}/stream",
    response_class=Response,
    responses={
        200: {
            "content": {EVENT_STREAM: {}},
            "description": "The session's events, live: user_message, message.delta, "
            "tool_call, tool_result, message, discard, session.final (then the stream ends).",
        }
    },
)
async def follow_chat(
    session_id: str,
    account: SessionAccount,
    services: ServicesDep,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=40)] = None,
    after: Annotated[int | None, Query(ge=0)] = None,
) -> Response:
    """Follow a session live; resume after a dropped connection with `Last-Event-ID` (or
    `?after=`): no event is lost or repeated."""
    start = resume_position(last_event_id, after)
    await services.chats.check_owned(account, session_id)
    return event_source(conversation_events(services.streams, session_id, start))


@router.post("/{session_id}/context", responses={409: {"model": ErrorResponse}})
async def add_chat_context(
    session_id: str, body: AddContextRequest, account: AccountId, services: ServicesDep
) -> ContextResponse:
    """Something more the model should know on the session's later turns (it reads the 5
    most recent, in its system prompt); 409 once the session is final or for a stateless
    conversation (its client sends `additional_data` with each turn)."""
    context = await services.chats.add_context(account, session_id, body.context)
    return ContextResponse(context=context)


# ---- human operators (the console's, or any caller's with the account's key) ---------------


@router.post("/{session_id}/takeover", responses={409: {"model": ErrorResponse}})
async def take_over_chat(
    session_id: str, body: TakeoverRequest, account: AccountId, services: ServicesDep
) -> SessionView:
    """The operator holds the session from now on: the agent stops answering, user messages
    are recorded and streamed (their senders get 202). A turn in flight finishes first. 409:
    final, stateless, or held by another operator."""
    return await services.chats.take_over(account, session_id, body.operator)


@router.post(
    "/{session_id}/operator-messages",
    status_code=status.HTTP_201_CREATED,
    responses={409: {"model": ErrorResponse}, 413: {"model": ErrorResponse}},
)
async def send_operator_message(
    session_id: str,
    body: OperatorMessageRequest,
    account: AccountId,
    services: ServicesDep,
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=200)] = None,
) -> OperatorMessageResponse:
    """The operator's message to the user, delivered on the session's channel (a text, the
    stream, webhooks) and read by the agent once it answers again. 409 unless taken over.
    A retry with the same `Idempotency-Key` answers the first one's message, written once."""
    result = await services.chats.operator_message(
        account, session_id, body.content, idempotency_key
    )
    return OperatorMessageResponse(seq=result.seq, message=result.message)


@router.post(
    "/{session_id}/whisper",
    responses={409: {"model": ErrorResponse}, 413: {"model": ErrorResponse}},
)
async def whisper_to_agent(
    session_id: str, body: WhisperRequest, account: AccountId, services: ServicesDep
) -> SendMessageResponse:
    """Guidance for the agent's next turn that the user never sees (not in `messages`; the
    audit log has `operator.whisper`, its length only). With `reply_now` the agent answers at
    once and this holds its reply (409 while an operator holds the session)."""
    turn = await services.chats.whisper(
        account, session_id, body.content, body.reply_now, body.operator
    )
    messages = turn.messages or []
    return SendMessageResponse(messages=messages, is_final=turn.is_final, mode=turn.mode)


@router.post("/{session_id}/handback", responses={409: {"model": ErrorResponse}})
async def hand_back_chat(
    session_id: str,
    account: AccountId,
    services: ServicesDep,
    body: HandbackRequest | None = None,
) -> SessionView:
    """The agent answers again; a user message left unanswered meanwhile is answered now.
    409 unless an operator holds the session."""
    return await services.chats.hand_back(account, session_id, body.operator if body else None)


@router.post("/{session_id}/approvals/{tool_call_id}", responses={409: {"model": ErrorResponse}})
async def decide_tool_approval(
    session_id: str,
    tool_call_id: Annotated[str, Path(max_length=200)],
    body: ApprovalRequest,
    account: AccountId,
    services: ServicesDep,
) -> ApprovalResponse:
    """Lets a tool call that waits for approval (`tool.approval_requested`, the session's
    `pending_approvals`) run, or refuses it; the model reads the refusal and its note. 404
    when no such call waits (decided already, timed out, or never asked)."""
    decided = await services.chats.decide_approval(
        account, session_id, tool_call_id, body.approved, body.note, body.operator
    )
    return ApprovalResponse(
        tool_call_id=decided.tool_call_id, name=decided.name, approved=body.approved
    )


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
