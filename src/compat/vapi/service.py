"""The Vapi face's sessions and chats, on Parley's chat sessions.

A Vapi session is a Parley session (the same id) opened on channel `vapi`; its name, and
whether the client deleted it through the face, live in `vapi_sessions`. A Vapi chat is one
turn, stored in `vapi_chats`: of the session its client named (`sessionId`), or, for a chat
without a session, of a stateless conversation (text-chat turns: no inactivity timer, no
active-session quota) whose sealed state the chat keeps, so that the next chat can chain
from it (`previousChatId`). Stateless turns take no squad: a squad's chat without a session
runs in a session the face opens for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from src.compat.vapi.errors import BadRequest, Unmapped
from src.compat.vapi.mapping import (
    VAPI_CHANNEL,
    agent_of_assistant,
    refuse_unmapped,
    response_object,
    session_fields,
    vapi_costs,
    vapi_messages,
    vapi_session,
)
from src.compat.vapi.schemas import (
    AgentChoice,
    CreateChat,
    CreateSession,
    InputMessage,
    UpdateSession,
    unmapped_fields,
)
from src.config import Settings
from src.costs import session_costs
from src.db.queries import transcript
from src.db.tables import ChatSession, VapiChat, VapiSession
from src.domain import Message, SessionStatus
from src.errors import NotFound, PayloadTooLarge
from src.services.chat_sessions import ChatSessionService, OpenChat
from src.services.text_chat import PreparedTurn, TextChatService, TextChatTurn

# Vapi's default session expiration.
_VAPI_DEFAULT_EXPIRATION = 86_400


@dataclass
class PreparedChat:
    """A chat that passed every check and whose conversation is known, ready to send:
    a turn of a session (`workflow_id`), or a stateless turn (`stateless`)."""

    chat_id: str
    account_id: str
    body: CreateChat
    content: str
    # The session, or the stateless conversation's call id (its stream is under it too).
    session_id: str
    session_named: bool
    workflow_id: str
    assistant_id: str | None
    squad_id: str | None
    created: datetime
    # What marks this turn's events in the conversation's stream.
    stream_turn: str
    stateless: PreparedTurn | None = None
    variables: dict[str, Any] | None = None


@dataclass
class Page:
    page: int
    limit: int


class VapiFace:
    def __init__(
        self,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
        chats: ChatSessionService,
        text_chat: TextChatService,
    ) -> None:
        self._settings = settings
        self._db = sessions
        self._chats = chats
        self._text_chat = text_chat
        # Streamed turns whose client may have left: kept until they have been recorded.
        self._answering: set[asyncio.Task[VapiChat]] = set()

    # ---- sessions ----------------------------------------------------------------------

    async def open_session(self, account_id: str, body: CreateSession) -> dict[str, Any]:
        refuse_unmapped(unmapped_fields(body))
        if body.status == "completed":
            raise Unmapped("a session cannot be created `completed`; leave `status` out")
        expiration = self._expiration(body.expirationSeconds)
        if expiration is None:
            expiration = min(_VAPI_DEFAULT_EXPIRATION, self._settings.vapi_max_ttl_seconds)
        view, _ = await self._chats.open(
            account_id,
            self._open_request(body, expiration),
            max_ttl_seconds=self._settings.vapi_max_ttl_seconds,
        )
        async with self._db.begin() as db:
            db.add(VapiSession(id=view.id, account_id=account_id, name=body.name, deleted=False))
        return vapi_session(view, account_id, body.name)

    async def session(self, account_id: str, session_id: str) -> dict[str, Any]:
        named = await self._face_session(account_id, session_id)
        view = await self._chats.get(account_id, session_id)
        return vapi_session(view, account_id, named.name if named else None)

    async def list_sessions(
        self, account_id: str, page: Page, assistant_id: str | None, squad_id: str | None
    ) -> dict[str, Any]:
        """The sessions opened through the face, newest first."""
        where = [
            VapiSession.account_id == account_id,
            VapiSession.deleted.is_(False),
            ChatSession.id == VapiSession.id,
        ]
        if assistant_id is not None:
            where.append(ChatSession.agent_id == assistant_id)
        if squad_id is not None:
            where.append(ChatSession.squad_id == squad_id)
        async with self._db() as db:
            total = await db.scalar(
                select(func.count()).select_from(ChatSession).join(VapiSession).where(*where)
            )
            rows = (
                await db.execute(
                    select(ChatSession, VapiSession.name)
                    .join(VapiSession)
                    .where(*where)
                    .order_by(ChatSession.created_time.desc(), ChatSession.id.desc())
                    .offset((page.page - 1) * page.limit)
                    .limit(page.limit)
                )
            ).all()
        results = [
            session_fields(
                row.id,
                account_id,
                row.created_time,
                row.last_activity,
                SessionStatus(row.status),
                row.ttl_seconds,
                row.agent_id,
                row.squad_id,
                name,
            )
            for row, name in rows
        ]
        return {"results": results, "metadata": _metadata(page, total or 0)}

    async def update_session(
        self, account_id: str, session_id: str, body: UpdateSession
    ) -> dict[str, Any]:
        refuse_unmapped(unmapped_fields(body))
        named = await self._face_session(account_id, session_id)
        view = await self._chats.get(account_id, session_id)
        expiration = self._expiration(body.expirationSeconds)
        if expiration is not None and expiration != view.ttl_seconds:
            raise Unmapped(
                "`expirationSeconds` cannot change once a session is open: Parley fixes a "
                "session's inactivity timeout when it opens"
            )
        if body.status == "active" and view.status == SessionStatus.FINAL:
            raise Unmapped("a completed session cannot be made active again; open a new one")
        name = named.name if named else None
        if body.name is not None:
            name = body.name
            await self._keep_session(account_id, session_id, name=name)
        if body.status == "completed" and view.status == SessionStatus.ACTIVE:
            view = await self._chats.end(account_id, session_id, None)
        return vapi_session(view, account_id, name)

    async def delete_session(self, account_id: str, session_id: str) -> dict[str, Any]:
        """Ends the session and hides it from the face; Parley keeps its record (the native
        routes and the audit log still show it)."""
        named = await self._face_session(account_id, session_id)
        view = await self._chats.get(account_id, session_id)
        if view.status == SessionStatus.ACTIVE:
            view = await self._chats.end(account_id, session_id, None)
        await self._keep_session(account_id, session_id, deleted=True)
        return vapi_session(view, account_id, named.name if named else None)

    async def _face_session(self, account_id: str, session_id: str) -> VapiSession | None:
        """The face's record of an account's session (None for one opened natively); a
        session deleted through the face is not found."""
        async with self._db() as db:
            row = await db.get(VapiSession, session_id)
        if row is not None and (row.account_id != account_id or row.deleted):
            raise NotFound(f"session {session_id!r} not found")
        return row

    async def _keep_session(
        self, account_id: str, session_id: str, *, name: str | None = None, deleted: bool = False
    ) -> None:
        async with self._db.begin() as db:
            row = await db.get(VapiSession, session_id)
            if row is None:
                row = VapiSession(id=session_id, account_id=account_id, name=None, deleted=False)
                db.add(row)
            if name is not None:
                row.name = name
            if deleted:
                row.deleted = True

    def _expiration(self, seconds: float | None) -> int | None:
        if seconds is None:
            return None
        low, high = self._settings.min_ttl_seconds, self._settings.vapi_max_ttl_seconds
        if seconds != int(seconds) or not low <= seconds <= high:
            raise BadRequest(f"expirationSeconds must be a whole number between {low} and {high}")
        return int(seconds)

    def _open_request(self, body: AgentChoice, ttl: int | None) -> OpenChat:
        given = [body.assistantId, body.assistant, body.squadId]
        if sum(value is not None for value in given) != 1:
            raise BadRequest("give exactly one of `assistantId`, `assistant` or `squadId`")
        overrides = body.assistantOverrides
        return OpenChat(
            agent_id=body.assistantId,
            agent=agent_of_assistant(body.assistant) if body.assistant else None,
            squad_id=body.squadId,
            channel=VAPI_CHANNEL,
            ttl_seconds=ttl,
            additional_data=(overrides.variableValues or {}) if overrides else {},
        )

    # ---- chats -------------------------------------------------------------------------

    async def prepare_chat(self, account_id: str, body: CreateChat) -> PreparedChat:
        """Checks a chat and finds (or starts) its conversation; nothing is sent yet."""
        refuse_unmapped(unmapped_fields(body))
        if body.sessionId is not None and body.previousChatId is not None:
            raise BadRequest("`sessionId` and `previousChatId` are mutually exclusive")
        content = _content_of(body.input)
        if body.sessionId is not None:
            await self._face_session(account_id, body.sessionId)
            row = await self._chats.check_owned(account_id, body.sessionId)
            self._same_agent(body, row.agent_id, row.squad_id, "sessionId")
            return await self._session_turn(
                account_id, body, content, body.sessionId, True, row.agent_id, row.squad_id
            )
        if body.previousChatId is not None:
            previous = await self._chat_row(account_id, body.previousChatId)
            self._same_agent(body, previous.assistant_id, previous.squad_id, "previousChatId")
            await self._check_latest(previous)
            if previous.state is None:  # a turn of a session: the next one is too
                return await self._session_turn(
                    account_id,
                    body,
                    content,
                    previous.session_id,
                    previous.session_named,
                    previous.assistant_id,
                    previous.squad_id,
                )
            return await self._stateless_turn(account_id, body, content, previous)
        if body.squadId is not None:
            view, _ = await self._chats.open(account_id, self._open_request(body, None))
            return await self._session_turn(
                account_id, body, content, view.id, False, None, view.squad_id
            )
        return await self._stateless_turn(account_id, body, content, None)

    async def _session_turn(
        self,
        account_id: str,
        body: CreateChat,
        content: str,
        session_id: str,
        named: bool,
        assistant_id: str | None,
        squad_id: str | None,
    ) -> PreparedChat:
        workflow_id = await self._chats.check_send(account_id, session_id, content, None)
        return PreparedChat(
            chat_id=str(uuid.uuid4()),
            account_id=account_id,
            body=body,
            content=content,
            session_id=session_id,
            session_named=named,
            workflow_id=workflow_id,
            assistant_id=None if squad_id else assistant_id,
            squad_id=squad_id,
            created=datetime.now(UTC),
            stream_turn=str(uuid.uuid4()),
        )

    async def _stateless_turn(
        self, account_id: str, body: CreateChat, content: str, previous: VapiChat | None
    ) -> PreparedChat:
        """A turn of a stateless conversation: its first (no `previous`), or the next after
        `previous`, with the transcript as the server recorded it and the sealed state."""
        now = datetime.now(UTC)
        message = Message(role="user", content=content, time=now)
        if previous is None:
            self._open_request(body, None)  # the same checks of the agent as a session's
            overrides = body.assistantOverrides
            variables = (overrides.variableValues or {}) if overrides else {}
            turn = TextChatTurn(
                agent_id=body.assistantId,
                agent=agent_of_assistant(body.assistant) if body.assistant else None,
                messages=[message],
                additional_data=variables,
                channel=VAPI_CHANNEL,
            )
        else:
            variables = previous.variables or {}
            async with self._db() as db:
                history = await transcript(db, previous.session_id)
            if len(history) + 1 > self._settings.max_transcript_messages:
                raise PayloadTooLarge(
                    f"the conversation has {len(history)} messages, the most it may have "
                    "(PARLEY_MAX_TRANSCRIPT_MESSAGES): start a new one"
                )
            turn = TextChatTurn(
                agent_id=previous.assistant_id,
                messages=[*history, message],
                state=previous.state,
                additional_data=variables,
                channel=VAPI_CHANNEL,
            )
        prepared = await self._text_chat.prepare(account_id, turn)
        return PreparedChat(
            chat_id=str(uuid.uuid4()),
            account_id=account_id,
            body=body,
            content=content,
            session_id=prepared.input.call_id,
            session_named=False,
            workflow_id=prepared.workflow_id,
            assistant_id=prepared.input.agent.id,
            squad_id=None,
            created=now,
            stream_turn=prepared.workflow_id,
            stateless=prepared,
            variables=variables,
        )

    async def answer(self, chat: PreparedChat) -> VapiChat:
        """Sends the chat's input and records the chat with the turn's messages."""
        state: str | None = None
        if chat.stateless is not None:
            result = await self._text_chat.run(chat.stateless)
            messages, first_seq, state = result.messages, result.first_seq, result.state
        else:
            turn = await self._chats.deliver(
                chat.account_id,
                chat.session_id,
                chat.workflow_id,
                chat.content,
                None,
                chat.stream_turn,
            )
            messages, first_seq = turn.messages or [], turn.first_seq
        row = VapiChat(
            id=chat.chat_id,
            account_id=chat.account_id,
            session_id=chat.session_id,
            session_named=chat.session_named,
            previous_chat_id=chat.body.previousChatId,
            name=chat.body.name,
            assistant_id=chat.assistant_id,
            squad_id=chat.squad_id,
            input=_stored_input(chat.body.input),
            output=[m.model_dump(mode="json") for m in messages],
            first_seq=first_seq,
            state=state,
            variables=chat.variables,
            created_time=chat.created,
        )
        async with self._db.begin() as db:
            db.add(row)
        return row

    def answer_detached(self, chat: PreparedChat) -> asyncio.Future[VapiChat]:
        """`answer`, carried on to its record even when the caller stops waiting (a streaming
        client that leaves): the turn goes on in its conversation either way."""
        task = asyncio.ensure_future(self.answer(chat))
        self._answering.add(task)
        task.add_done_callback(_forget(self._answering))
        return asyncio.shield(task)

    async def chat(self, account_id: str, chat_id: str) -> dict[str, Any]:
        return await self.chat_of(await self._chat_row(account_id, chat_id))

    async def chat_of(self, row: VapiChat, with_history: bool = True) -> dict[str, Any]:
        """A Vapi Chat: `messages` is the conversation up to and including its input,
        `output` what the turn produced."""
        output = output_messages(row)
        async with self._db() as db:
            session = await db.get(ChatSession, row.session_id)
            history = (
                await transcript(db, row.session_id, stop=row.first_seq) if with_history else []
            )
        start = session.created_time if session else row.created_time
        cost, costs = session_costs(output, [], self._settings.model_prices)
        out: dict[str, Any] = {
            "id": row.id,
            "orgId": row.account_id,
            "createdAt": row.created_time.isoformat(),
            "updatedAt": row.created_time.isoformat(),
            "input": _input_of(row.input, row.created_time, start),
            "output": vapi_messages(output, start),
            "cost": cost,
            "costs": vapi_costs(costs),
        }
        if with_history:
            out["messages"] = vapi_messages(history, start)
        optional = {
            "name": row.name,
            "assistantId": row.assistant_id,
            "squadId": row.squad_id,
            "sessionId": row.session_id if row.session_named else None,
            "previousChatId": row.previous_chat_id,
        }
        out.update({key: value for key, value in optional.items() if value is not None})
        return out

    def response_of(self, row: VapiChat) -> dict[str, Any]:
        return response_object(row.id, row.created_time, output_messages(row))

    async def list_chats(
        self, account_id: str, page: Page, filters: dict[str, str | None]
    ) -> dict[str, Any]:
        columns = {
            "assistantId": VapiChat.assistant_id,
            "squadId": VapiChat.squad_id,
            "previousChatId": VapiChat.previous_chat_id,
            "id": VapiChat.id,
        }
        where = [VapiChat.account_id == account_id]
        for name, value in filters.items():
            if value is None:
                continue
            if name == "sessionId":
                where += [VapiChat.session_id == value, VapiChat.session_named.is_(True)]
            else:
                where.append(columns[name] == value)
        async with self._db() as db:
            total = await db.scalar(select(func.count()).select_from(VapiChat).where(*where))
            rows = (
                await db.scalars(
                    select(VapiChat)
                    .where(*where)
                    .order_by(VapiChat.created_time.desc(), VapiChat.id.desc())
                    .offset((page.page - 1) * page.limit)
                    .limit(page.limit)
                )
            ).all()
        results = [await self.chat_of(row, with_history=False) for row in rows]
        return {"results": results, "metadata": _metadata(page, total or 0)}

    async def delete_chat(self, account_id: str, chat_id: str) -> dict[str, Any]:
        row = await self._chat_row(account_id, chat_id)
        chat = await self.chat_of(row)
        async with self._db.begin() as db:
            stored = await db.get(VapiChat, chat_id)
            if stored is not None:
                await db.delete(stored)
        return chat

    async def _chat_row(self, account_id: str, chat_id: str) -> VapiChat:
        async with self._db() as db:
            row = await db.get(VapiChat, chat_id)
        if row is None or row.account_id != account_id:
            raise NotFound(f"chat {chat_id!r} not found")
        return row

    async def _check_latest(self, previous: VapiChat) -> None:
        async with self._db() as db:
            later = await db.scalar(
                select(VapiChat.id)
                .where(
                    VapiChat.session_id == previous.session_id,
                    VapiChat.first_seq > previous.first_seq,
                )
                .limit(1)
            )
        if later is not None:
            raise Unmapped(
                f"chat {previous.id!r} is not the latest of its conversation: Parley does not "
                "branch a conversation; chain from its latest chat"
            )

    @staticmethod
    def _same_agent(
        body: CreateChat, assistant_id: str | None, squad_id: str | None, by: str
    ) -> None:
        """With `sessionId` or `previousChatId` the conversation's assistant answers: an
        `assistantId` or `squadId` may repeat it, never name another."""
        if body.assistant is not None or body.assistantOverrides is not None:
            raise Unmapped(
                f"with `{by}` the conversation's assistant answers: leave `assistant` and "
                "`assistantOverrides` out"
            )
        if body.assistantId is not None and body.assistantId != assistant_id:
            raise Unmapped(f"`assistantId` is not the assistant of the chat's `{by}`")
        if body.squadId is not None and body.squadId != squad_id:
            raise Unmapped(f"`squadId` is not the squad of the chat's `{by}`")


def _forget(tasks: set[asyncio.Task[VapiChat]]) -> Any:
    def forget(task: asyncio.Task[VapiChat]) -> None:
        tasks.discard(task)
        if not task.cancelled():
            with contextlib.suppress(Exception):
                task.exception()  # retrieved: a streaming caller reports it, if still there

    return forget


def output_messages(row: VapiChat) -> list[Message]:
    return [Message.model_validate(message) for message in row.output]


def _content_of(value: str | list[InputMessage]) -> str:
    """What the session reads: the string, or the user messages' texts in order."""
    if isinstance(value, str):
        return value
    if not value:
        raise BadRequest("`input` must be a string or a non-empty array of messages")
    texts = []
    for index, message in enumerate(value):
        if message.role != "user" or message.text is None:
            raise Unmapped(
                f"input[{index}]: only user messages with `content` are mapped; the session "
                "keeps the conversation (chain with `sessionId` or `previousChatId`)"
            )
        texts.append(message.text)
    return "\n\n".join(texts)


def _stored_input(value: str | list[InputMessage]) -> Any:
    if isinstance(value, str):
        return value
    return [{"role": m.role, "content": m.text} for m in value]


def _input_of(stored: Any, created: datetime, start: datetime) -> Any:
    if isinstance(stored, str):
        return stored
    seconds = max(0.0, (created - start).total_seconds())
    return [
        {
            "role": m["role"],
            "message": m["content"],
            "content": m["content"],
            "time": round(created.timestamp() * 1000, 3),
            "secondsFromStart": seconds,
        }
        for m in stored
    ]


def _metadata(page: Page, total: int) -> dict[str, Any]:
    pages = max(1, math.ceil(total / page.limit))
    return {
        "itemsPerPage": page.limit,
        "totalItems": total,
        "currentPage": page.page,
        "totalPages": pages,
        "hasNextPage": page.page < pages,
        "sortOrder": "DESC",
    }
