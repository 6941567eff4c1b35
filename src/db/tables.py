"""SQLAlchemy tables. These are storage types, distinct from the API schemas and the
workflow models; conversion happens where they meet (the services and activities)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    false,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from src.domain import Attachment, Author, Message, ToolCall, Usage

Json = JSON().with_variant(JSON(none_as_null=True), "postgresql")


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite keeps no offset by itself)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class Account(Base):
    __tablename__ = "accounts"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    created_time: Mapped[datetime] = mapped_column(UTCDateTime())


class ApiKey(Base):
    __tablename__ = "api_keys"

    key_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_time: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)


class WidgetKey(Base):
    """A publishable key (`pw_...`) for the web widget: one agent, a list of origins. Stored
    only as its SHA-256 hash, like API keys; `revoked` once deleted."""

    __tablename__ = "widget_keys"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    agent_id: Mapped[str] = mapped_column(String(64))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    allowed_origins: Mapped[list[str]] = mapped_column(Json)
    created_time: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)

    __table_args__ = (Index("ix_widget_keys_account_created", "account_id", "created_time", "id"),)


class AgentVersion(Base):
    """Each agent update is a new immutable row; the highest version is the current one."""

    __tablename__ = "agent_versions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    spec: Mapped[dict[str, Any]] = mapped_column(Json)
    created_time: Mapped[datetime] = mapped_column(UTCDateTime())
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)


class SquadVersion(Base):
    """Each squad update is a new immutable row, like agents'; inline members' secrets are
    sealed as agents' are."""

    __tablename__ = "squad_versions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    spec: Mapped[dict[str, Any]] = mapped_column(Json)
    created_time: Mapped[datetime] = mapped_column(UTCDateTime())
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)


class AgentSnapshotRow(Base):
    """Agent configurations frozen for sessions, content-addressed (SHA-256 of the JSON).
    They hold secrets, which is why workflows carry only the id."""

    __tablename__ = "agent_snapshots"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    config: Mapped[dict[str, Any]] = mapped_column(Json)
    created_time: Mapped[datetime] = mapped_column(UTCDateTime())


class ChatSession(Base):
    __tablename__ = "chat_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    agent_id: Mapped[str] = mapped_column(String(64))
    agent_version: Mapped[int] = mapped_column(Integer)
    snapshot_id: Mapped[str] = mapped_column(ForeignKey("agent_snapshots.id"))
    channel: Mapped[str] = mapped_column(String(64))
    external_id: Mapped[dict[str, Any] | None] = mapped_column(Json, nullable=True)
    endpoint_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    workflow_id: Mapped[str] = mapped_column(String(200))
    # "session" (a ChatSessionWorkflow) or "stateless" (text-chat completion turns).
    kind: Mapped[str] = mapped_column(String(16), default="session")
    additional_data: Mapped[dict[str, Any]] = mapped_column(Json)
    ttl_seconds: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    final_reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    artifact: Mapped[dict[str, Any] | None] = mapped_column(Json, nullable=True)
    analysis_usage: Mapped[list[dict[str, Any]]] = mapped_column(Json, default=list)
    created_time: Mapped[datetime] = mapped_column(UTCDateTime())
    last_activity: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_time: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # The context strings a session had when it finished (None: none, or before 0008).
    context: Mapped[list[str] | None] = mapped_column(Json, nullable=True)
    # Who answers: "ai", "human" (an operator holds it; `active_human` {"id", "name"}), None
    # before 0009; and whether the agent asked for a human that none has been yet.
    mode: Mapped[str | None] = mapped_column(String(16), nullable=True)
    help_requested: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    active_human: Mapped[dict[str, Any] | None] = mapped_column(Json, nullable=True)
    # The squad the session runs (None: a single agent); `agent_id` is then its active member.
    squad_id: Mapped[str | None] = mapped_column(String(64), nullable=True)

    __table_args__ = (
        Index("ix_chat_sessions_account_created", "account_id", "created_time", "id"),
        # Counting an account's active sessions at each open (PARLEY_MAX_ACTIVE_SESSIONS).
        Index("ix_chat_sessions_account_status", "account_id", "status"),
        # The sessions of one endpoint, final ones too (an SMS redelivery is looked up there).
        Index("ix_chat_sessions_endpoint", "endpoint_hash"),
        # Second guard behind the workflow ID: one active session per external endpoint.
        Index(
            "uq_chat_sessions_active_endpoint",
            "endpoint_hash",
            unique=True,
            sqlite_where=text("status = 'active' AND endpoint_hash IS NOT NULL"),
            postgresql_where=text("status = 'active' AND endpoint_hash IS NOT NULL"),
        ),
    )


class ChatMessage(Base):
    __tablename__ = "chat_messages"

    session_id: Mapped[str] = mapped_column(ForeignKey("chat_sessions.id"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    content: Mapped[str | None] = mapped_column(Text, nullable=True)
    tool_calls: Mapped[list[dict[str, Any]]] = mapped_column(Json)
    usage: Mapped[dict[str, Any] | None] = mapped_column(Json, nullable=True)
    time: Mapped[datetime] = mapped_column(UTCDateTime())
    # The client's Idempotency-Key of an answered user message: a retry with a key the
    # workflow no longer remembers is answered from here, never with a second turn.
    idempotency_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    # What came with the message (an SMS's media): [{"url", "content_type"}]; None before 0007.
    attachments: Mapped[list[dict[str, Any]] | None] = mapped_column(Json, nullable=True)
    # An assistant message's author: {"kind": "ai", "agent_id"} or {"kind": "human", "id",
    # "name"}; None before 0008 (the agent's).
    author: Mapped[dict[str, Any] | None] = mapped_column(Json, nullable=True)
    # The session's write that stored it (RecordedBatch.batch); None before 0012 and for
    # stateless conversations.
    batch: Mapped[int | None] = mapped_column(Integer, nullable=True)

    __table_args__ = (
        Index(
            "uq_chat_messages_session_idempotency_key",
            "session_id",
            "idempotency_key",
            unique=True,
        ),
    )


class AuditEvent(Base):
    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    # Deterministic per event, so an activity retried after a crash writes no second row.
    event_key: Mapped[str] = mapped_column(String(200), unique=True)
    account_id: Mapped[str] = mapped_column(String(64))
    session_id: Mapped[str] = mapped_column(String(64), index=True)
    kind: Mapped[str] = mapped_column(String(64))
    data: Mapped[dict[str, Any]] = mapped_column(Json)
    time: Mapped[datetime] = mapped_column(UTCDateTime())
    # The session's write that stored it, as on ChatMessage.
    batch: Mapped[int | None] = mapped_column(Integer, nullable=True)


class RecordedBatch(Base):
    """One write of a session's transcript (src/db/recorded_batches.py): its number in the
    session and a digest of what it held, so that a write of the same number with other
    contents (the workflow task that made the first one was lost) replaces what it left."""

    __tablename__ = "recorded_batches"

    session_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    batch: Mapped[int] = mapped_column(Integer, primary_key=True)
    digest: Mapped[str] = mapped_column(String(64))


class McpCallSent(Base):
    """An MCP tool call about to be sent, written before the request goes out: an attempt that
    finds its idempotency key here knows an earlier attempt may have run the tool."""

    __tablename__ = "mcp_calls_sent"

    idempotency_key: Mapped[str] = mapped_column(String(200), primary_key=True)
    session_id: Mapped[str] = mapped_column(String(64), index=True)
    sent_time: Mapped[datetime] = mapped_column(UTCDateTime())


def message_of_row(row: ChatMessage) -> Message:
    return Message(
        role=row.role,
        content=row.content,
        tool_calls=[ToolCall.model_validate(call) for call in row.tool_calls],
        time=row.time,
        usage=Usage.model_validate(row.usage) if row.usage else None,
        attachments=[Attachment.model_validate(a) for a in row.attachments or []],
        author=Author.model_validate(row.author) if row.author else None,
    )


class StreamEvent(Base):
    """One event of a conversation's live stream (`GET /chats/{id}/stream`, and the SSE
    answers of the message routes): model text as it comes, tool calls and results, complete
    messages, the end. `position` counts the conversation's events from 1 with no gaps: it is
    the SSE event id clients resume from. `id` orders all conversations' events (the API's
    poller on SQLite wakes followers by it)."""

    __tablename__ = "stream_events"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    # A session id or a stateless conversation's call id; no foreign key: a stateless first
    # turn streams before its conversation is recorded.
    session_id: Mapped[str] = mapped_column(String(64))
    position: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(32))
    # The inbox item (idempotency key or request id) whose turn produced the event, if any:
    # the message route streams the events of its own turn.
    turn: Mapped[str | None] = mapped_column(String(200), nullable=True)
    # Unique per conversation when set: an event written twice (a retried activity, or both
    # the model call and the message record) is stored once.
    event_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    data: Mapped[dict[str, Any]] = mapped_column(Json)
    time: Mapped[datetime] = mapped_column(UTCDateTime())
    # The session's write that appended it (a recorded message's event), as on ChatMessage.
    batch: Mapped[int | None] = mapped_column(Integer, nullable=True)

    __table_args__ = (
        Index("uq_stream_events_position", "session_id", "position", unique=True),
        Index("uq_stream_events_key", "session_id", "event_key", unique=True),
    )


class PhoneNumber(Base):
    """A phone number texts reach Parley on: one account's, answered by one agent. `config`
    holds the provider's credentials, the auth token sealed (src/sealing/secret_box.py)."""

    __tablename__ = "phone_numbers"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    # E.164, e.g. +15550001111; one number belongs to one account.
    number: Mapped[str] = mapped_column(String(32), unique=True)
    provider: Mapped[str] = mapped_column(String(16))
    # What answers: an agent, or a squad (then agent_id is None).
    agent_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    squad_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    config: Mapped[dict[str, Any]] = mapped_column(Json)
    ttl_seconds: Mapped[int | None] = mapped_column(Integer, nullable=True)
    help_text: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_time: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_time: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        Index("ix_phone_numbers_account_created", "account_id", "created_time", "id"),
    )


class SmsOptOut(Base):
    """Whether a sender texted STOP to a number (and not START since): nothing is sent to an
    opted-out pair."""

    __tablename__ = "sms_opt_outs"

    number: Mapped[str] = mapped_column(String(32), primary_key=True)
    sender: Mapped[str] = mapped_column(String(32), primary_key=True)
    opted_out: Mapped[bool] = mapped_column(Boolean)
    time: Mapped[datetime] = mapped_column(UTCDateTime())


class SmsPart(Base):
    """One text of an assistant message sent by SMS (a long message is several). Written
    before the provider is asked to send it (`state` "sending"): an attempt that finds the row
    so knows an earlier one may have sent it, and asks the provider before sending again."""

    __tablename__ = "sms_parts"

    session_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    part: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[str] = mapped_column(String(64))
    sender: Mapped[str] = mapped_column(String(32))
    recipient: Mapped[str] = mapped_column(String(32))
    body: Mapped[str] = mapped_column(Text)
    # "sending" (asked, answer unknown), "accepted" (the provider took it), "failed" (refused),
    # "dropped" (never asked: the recipient opted out).
    state: Mapped[str] = mapped_column(String(16))
    provider_message_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # The provider's delivery status (queued, sent, delivered, undelivered, failed).
    status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    error_code: Mapped[str | None] = mapped_column(String(16), nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_time: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_time: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        Index("uq_sms_parts_provider_message_id", "provider_message_id", unique=True),
    )


class SmsStatusEvent(Base):
    """A delivery status callback taken: the same (message, status) posted again is ignored."""

    __tablename__ = "sms_status_events"

    provider_message_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), primary_key=True)
    time: Mapped[datetime] = mapped_column(UTCDateTime())


class VapiSession(Base):
    """A session opened through the Vapi face (/compat/vapi): the name Vapi lets a client
    give it, and whether the client deleted it there (the session's record stays)."""

    __tablename__ = "vapi_sessions"

    id: Mapped[str] = mapped_column(ForeignKey("chat_sessions.id"), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    name: Mapped[str | None] = mapped_column(String(40), nullable=True)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)


class VapiChat(Base):
    """A Vapi chat: one turn of a conversation. Of a session (the one its client named,
    `session_named`, or one the face opened for a squad), or of a stateless conversation
    (`session_id` is its call id) that chats chain with previousChatId: then `state` is the
    sealed state of the next turn and `variables` the template values each turn resends."""

    __tablename__ = "vapi_chats"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    session_id: Mapped[str] = mapped_column(ForeignKey("chat_sessions.id"))
    session_named: Mapped[bool] = mapped_column(Boolean, default=False)
    previous_chat_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    name: Mapped[str | None] = mapped_column(String(40), nullable=True)
    assistant_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    squad_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # The input as the client sent it (a string or Vapi messages); the messages the turn
    # produced (Parley's Message JSON); the seq of the first of them in the session.
    input: Mapped[Any] = mapped_column(Json)
    output: Mapped[list[dict[str, Any]]] = mapped_column(Json)
    first_seq: Mapped[int] = mapped_column(Integer)
    state: Mapped[str | None] = mapped_column(Text, nullable=True)
    variables: Mapped[dict[str, Any] | None] = mapped_column(Json, nullable=True)
    created_time: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        Index("ix_vapi_chats_account_created", "account_id", "created_time", "id"),
        Index("ix_vapi_chats_session", "session_id", "first_seq"),
    )
