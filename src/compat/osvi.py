"""OSVI's chat sessions on Parley's own: a (customer, agent) pair is one endpoint of the `osvi`
channel, so it has at most one active session, as an OSVI customer has with an agent."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from src.db.tables import ChatSession
from src.domain import Message, Operator, SessionMode, SessionStatus, SessionView
from src.errors import InvalidInput, NotFound
from src.services.agents import AgentService
from src.services.chat_sessions import ChatSessionService, OpenChat
from src.session_ids import endpoint_hash

OSVI_CHANNEL = "osvi"

# The note of a session closed because the same customer opened a new one with the agent.
REPLACED_NOTE = "closed by a new OSVI session of the same customer with the same agent"


class SupportCommand(StrEnum):
    TAKEOVER = "takeover"  # a human holds the session
    TELL = "tell"  # guidance for the agent, and its turn at once
    WHISPER = "whisper"  # guidance for the agent's next turn
    END = "end"  # the agent answers again
    CLOSE = "close"  # the session ends


@dataclass(frozen=True)
class OsviSession:
    """A session with what OSVI's session object shows beyond the native view."""

    view: SessionView
    account_id: str
    customer_id: str | None
    input_fields: dict[str, Any]


@dataclass(frozen=True)
class InboundReply:
    session_id: str
    reply: str | None
    mode: SessionMode
    help_requested: bool


@dataclass(frozen=True)
class SupportOutcome:
    command: SupportCommand | None
    reply: str | None = None
    active_human: Operator | None = None


def osvi_endpoint(customer_id: str, agent_id: str) -> dict[str, Any]:
    return {"customer_id": customer_id, "agent_uuid": agent_id}


def reply_text(messages: list[Message]) -> str | None:
    """What the customer reads of a turn: its assistant texts, in order (a tool-calling step
    may say something before the reply)."""
    texts = [m.content for m in messages if m.role == "assistant" and m.content]
    return "\n\n".join(texts) if texts else None


class OsviChat:
    def __init__(
        self,
        chats: ChatSessionService,
        agents: AgentService,
        sessions: async_sessionmaker[AsyncSession],
    ) -> None:
        self._chats = chats
        self._agents = agents
        self._sessions = sessions

    async def open(
        self,
        account_id: str,
        agent_id: str,
        customer_id: str,
        input_fields: dict[str, Any],
        context: list[str],
    ) -> OsviSession:
        """A new session of the customer with the agent; the active one, if any, is ended
        first (as a user end, with a note saying why)."""
        await self._agents.get(account_id, agent_id)  # 404 before anything is closed
        active = await self._active_id(account_id, customer_id, agent_id)
        if active is not None:
            await self._chats.end(account_id, active, REPLACED_NOTE)
        view, _ = await self._chats.open(
            account_id,
            OpenChat(
                agent_id=agent_id,
                channel=OSVI_CHANNEL,
                external_id=osvi_endpoint(customer_id, agent_id),
                additional_data=input_fields,
                context=context,
            ),
        )
        return await self._with_record(account_id, view)

    async def inbound(
        self,
        account_id: str,
        agent_id: str,
        customer_id: str,
        content: str,
        session_id: str | None,
    ) -> InboundReply:
        """The customer's message to the given session, or to their active one with the
        agent (opened if there is none), and the agent's reply (none while a human holds it)."""
        if session_id is None:
            view, _ = await self._chats.open(
                account_id,
                OpenChat(
                    agent_id=agent_id,
                    channel=OSVI_CHANNEL,
                    external_id=osvi_endpoint(customer_id, agent_id),
                ),
            )
            session_id = view.id
        else:
            row = await self._chats.check_owned(account_id, session_id)
            if row.agent_id != agent_id or _customer_of(row) != customer_id:
                raise InvalidInput(
                    f"session_id: session {session_id!r} is not the session of customer "
                    f"{customer_id!r} with agent {agent_id!r}"
                )
        turn = await self._chats.send(account_id, session_id, content, None)
        after = await self._chats.get(account_id, session_id)
        return InboundReply(
            session_id=session_id,
            reply=reply_text(turn.messages or []),
            mode=after.mode,
            help_requested=after.help_requested,
        )

    async def session(self, account_id: str, session_id: str) -> OsviSession:
        return await self._with_record(account_id, await self._chats.get(account_id, session_id))

    async def active(self, account_id: str, customer_id: str, agent_id: str) -> OsviSession:
        session_id = await self._active_id(account_id, customer_id, agent_id)
        found = await self.session(account_id, session_id) if session_id else None
        if found is None or found.view.is_final:
            raise NotFound(
                f"customer {customer_id!r} has no active session with agent {agent_id!r}"
            )
        return found

    async def active_by_agent(self, account_id: str, customer_id: str) -> dict[str, OsviSession]:
        """The customer's active sessions, by agent id."""
        active = (ChatSession.account_id == account_id) & (
            ChatSession.status == SessionStatus.ACTIVE.value
        )
        async with self._sessions() as db:
            agent_ids = (
                await db.scalars(
                    select(ChatSession.agent_id)
                    .where(active, ChatSession.channel == OSVI_CHANNEL)
                    .distinct()
                )
            ).all()
            endpoints = [
                endpoint_hash(account_id, OSVI_CHANNEL, osvi_endpoint(customer_id, agent_id))
                for agent_id in agent_ids
            ]
            session_ids = (
                await db.scalars(
                    select(ChatSession.id).where(active, ChatSession.endpoint_hash.in_(endpoints))
                )
            ).all()
        found = [await self.session(account_id, session_id) for session_id in session_ids]
        return {s.view.agent_id: s for s in found if not s.view.is_final}

    async def add_context(self, account_id: str, session_id: str, context: str) -> list[str]:
        return await self._chats.add_context(account_id, session_id, context)

    async def support(
        self,
        account_id: str,
        session_id: str,
        command: SupportCommand | None,
        message: str | None,
        operator: Operator,
    ) -> SupportOutcome:
        """One of OSVI's support commands on the native human-in-the-loop operations. A
        message with `takeover` is the operator's first words to the customer, with `end`
        their last before the agent answers again, with `close` the session's closing note."""
        chats = self._chats
        match command:
            case SupportCommand.TAKEOVER:
                view = await chats.take_over(account_id, session_id, operator)
                if message is not None:
                    await chats.operator_message(account_id, session_id, message)
                return SupportOutcome(command, active_human=view.active_human)
            case SupportCommand.TELL:
                turn = await chats.whisper(
                    account_id, session_id, _needed(message, command), True, operator
                )
                return SupportOutcome(command, reply=reply_text(turn.messages or []))
            case SupportCommand.WHISPER:
                await chats.whisper(
                    account_id, session_id, _needed(message, command), False, operator
                )
            case SupportCommand.END:
                if message is not None:
                    await chats.operator_message(account_id, session_id, message)
                await chats.hand_back(account_id, session_id, operator)
            case SupportCommand.CLOSE:
                await chats.end(account_id, session_id, message)
            case None:
                await chats.operator_message(account_id, session_id, _needed(message, command))
        return SupportOutcome(command)

    async def _active_id(self, account_id: str, customer_id: str, agent_id: str) -> str | None:
        endpoint = endpoint_hash(account_id, OSVI_CHANNEL, osvi_endpoint(customer_id, agent_id))
        async with self._sessions() as db:
            found: str | None = await db.scalar(
                select(ChatSession.id).where(
                    ChatSession.account_id == account_id,
                    ChatSession.endpoint_hash == endpoint,
                    ChatSession.status == SessionStatus.ACTIVE.value,
                )
            )
        return found

    async def _with_record(self, account_id: str, view: SessionView) -> OsviSession:
        row = await self._chats.check_owned(account_id, view.id)
        return OsviSession(
            view=view,
            account_id=account_id,
            customer_id=_customer_of(row),
            input_fields=dict(row.additional_data or {}),
        )


def _customer_of(row: ChatSession) -> str | None:
    """The OSVI customer of a session opened through this face (None for a native one)."""
    if row.channel != OSVI_CHANNEL or not row.external_id:
        return None
    customer = row.external_id.get("customer_id")
    return str(customer) if customer is not None else None


def _needed(message: str | None, command: SupportCommand | None) -> str:
    if message is None:
        which = f"command {command.value!r}" if command else "no command"
        raise InvalidInput(f"message: required with {which}")
    return message
