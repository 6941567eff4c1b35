"""`/compat/osvi/v1/chat`: OSVI's chat API (its routes, field names and envelope) on Parley's
sessions, so that an OSVI client switches by changing its base URL and its `API-Token`.

Answers are `{"success": true, "data": ...}`; errors `{"success": false, "errors": [...]}`
(src/api/errors.py renders them for every path under /compat/osvi, the front door's too).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from fastapi import APIRouter, Query
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
)

from src.api.deps import AccountId, ServicesDep
from src.api.schemas import ContextText, check_template_values
from src.compat.osvi import OsviSession, SupportCommand
from src.domain import CONTEXT_KEPT, Operator, SessionMode, check_text

T = TypeVar("T")

# The support person of a call that names none: one per account.
DEFAULT_OPERATOR_NAME = "Support"


class OsviFailure(BaseModel):
    success: Literal[False]
    errors: list[str]


class Envelope(BaseModel, Generic[T]):
    # No default: a response that leaves out unset fields (support's) keeps it.
    success: Literal[True]
    data: T


# What the routes may answer besides 200, every one in OSVI's envelope.
OSVI_FAILURES: dict[int | str, dict[str, Any]] = {
    status: {"model": OsviFailure, "description": description}
    for status, description in {
        401: "a missing, unknown or revoked key in `API-Token`",
        404: "an unknown agent or session (another account's included)",
        409: "what the session's state does not allow now (closed, held by another person)",
        413: "a body over PARLEY_MAX_REQUEST_BYTES, a message over PARLEY_MAX_MESSAGE_CHARS",
        415: "a body not sent as application/json",
        422: "invalid input, naming the field",
        429: "over the key's rate (Retry-After) or a quota",
    }.items()
}

router = APIRouter(prefix="/v1/chat", tags=["OSVI compatible"], responses=OSVI_FAILURES)


# ---- requests -------------------------------------------------------------------------------


class OsviRequest(BaseModel):
    # A field OSVI's API does not have is refused, never silently ignored.
    model_config = ConfigDict(extra="forbid")


def _number_as_text(value: Any) -> Any:
    """A customer id sent as a JSON number (a phone number) is the same customer as its text."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _text(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    check_text(value, "the text")
    return value


CustomerId = Annotated[
    str,
    Field(min_length=1, max_length=256, description="Any stable string, usually a phone number."),
    BeforeValidator(_number_as_text),
    AfterValidator(_text),
]
AgentUuid = Annotated[
    str,
    Field(min_length=1, max_length=64, description="The id of one of the account's agents."),
]
Text = Annotated[str, AfterValidator(_text)]
OperatorField = Annotated[str, Field(max_length=200), AfterValidator(_text)]


class OpenSessionBody(OsviRequest):
    agent_uuid: AgentUuid
    customer_id: CustomerId
    input_fields: dict[str, Any] | None = Field(
        default=None, description="The agent's prompt variables (`{{first_name}}`)."
    )
    context: list[Annotated[str, Field(max_length=4000)]] | None = Field(
        default=None,
        max_length=100,
        description=f"Context strings; empty ones are dropped, the {CONTEXT_KEPT} most recent "
        "kept.",
    )

    @field_validator("input_fields")
    @classmethod
    def _input_fields_shape(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if value is None else check_template_values(value, "input_fields")

    @field_validator("context")
    @classmethod
    def _recent_context(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        check_text(value, "context")
        return [text for text in value if text.strip()][-CONTEXT_KEPT:]


class InboundBody(OsviRequest):
    agent_uuid: AgentUuid
    customer_id: CustomerId
    content: Text = Field(description="The customer's message.")
    session_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="Without it: the customer's active session with the agent, or a new one.",
    )


class InjectContextBody(OsviRequest):
    context: ContextText


class SupportBody(OsviRequest):
    command: SupportCommand | None = Field(
        default=None, description="None: `message` is a plain operator message."
    )
    message: Text | None = Field(
        default=None,
        validate_default=True,
        description="Required with `tell`, `whisper` and no command; with `takeover` it is "
        "sent to the customer after the takeover, with `end` before the hand-back, with "
        "`close` it is the closing note.",
    )
    operator_id: OperatorField | None = Field(
        default=None,
        description="Parley's addition: who acts (with `operator_name`); default: the account.",
    )
    operator_name: OperatorField | None = Field(default=None, validate_default=True)

    @field_validator("message")
    @classmethod
    def _message_when_needed(cls, message: str | None, info: ValidationInfo) -> str | None:
        command = info.data.get("command")
        if message is None and command in {SupportCommand.TELL, SupportCommand.WHISPER, None}:
            if "command" not in info.data:
                return message  # the command is invalid; that is the error to report
            which = f"command {command.value!r}" if command else "no command"
            raise ValueError(f"required with {which}")
        return message

    @field_validator("operator_name")
    @classmethod
    def _operator_named_together(cls, name: str | None, info: ValidationInfo) -> str | None:
        if (name is None) != (info.data.get("operator_id") is None):
            raise ValueError("operator_id and operator_name are given together, or neither")
        return name

    def operator(self, account_id: str) -> Operator:
        if self.operator_id is not None and self.operator_name is not None:
            return Operator(id=self.operator_id, name=self.operator_name)
        return Operator(id=f"account:{account_id}", name=DEFAULT_OPERATOR_NAME)


# ---- answers ---------------------------------------------------------------------------------

OsviMode = Literal["ai", "support"]


class SessionMetadata(BaseModel):
    input_fields: dict[str, Any]
    state_fields: dict[str, Any] = Field(
        default_factory=dict, description="Always empty: Parley agents have one prompt."
    )
    context: list[str]


class OsviSessionObject(BaseModel):
    id: str
    chat_agent_id: str = Field(description="The Parley agent id (OSVI's `agent_uuid`).")
    account_id: str
    customer_id: str | None
    mode: OsviMode
    help_requested: bool
    status: Literal["active", "dormant", "closed"]
    current_state: str | None = Field(
        default=None, description="Always null: Parley agents have one prompt."
    )
    metadata: SessionMetadata
    active_human: Operator | None
    created_at: datetime
    updated_at: datetime


class InboundData(BaseModel):
    session_id: str
    reply: str | None = Field(description="null while a human holds the session.")
    state: str | None = Field(default=None, description="Always null: one prompt per agent.")
    mode: OsviMode
    help_requested: bool


class ContextData(BaseModel):
    session_id: str
    context: list[str]


class SupportData(BaseModel):
    state: Literal["ok"]
    session_id: str
    command: SupportCommand | None
    reply: str | None = Field(default=None, description="`tell` only: the agent's reply.")
    active_human: Operator | None = Field(default=None, description="`takeover` only.")


def _mode(mode: SessionMode) -> OsviMode:
    return "support" if mode == SessionMode.HUMAN else "ai"


def session_object(session: OsviSession) -> OsviSessionObject:
    view = session.view
    return OsviSessionObject(
        id=view.id,
        chat_agent_id=view.agent_id,
        account_id=session.account_id,
        customer_id=session.customer_id,
        mode=_mode(view.mode),
        help_requested=view.help_requested,
        status="closed" if view.is_final else "active",
        metadata=SessionMetadata(input_fields=session.input_fields, context=view.context),
        active_human=view.active_human,
        created_at=view.created_time,
        updated_at=view.last_activity,
    )


# ---- routes ----------------------------------------------------------------------------------


@router.post("/session")
async def open_session(
    body: OpenSessionBody, account: AccountId, services: ServicesDep
) -> Envelope[OsviSessionObject]:
    """A new session of the customer with the agent; the customer's active one with that
    agent is closed first (a user end, with a note)."""
    session = await services.osvi.open(
        account, body.agent_uuid, body.customer_id, body.input_fields or {}, body.context or []
    )
    return Envelope[OsviSessionObject](success=True, data=session_object(session))


@router.post("/inbound")
async def inbound_message(
    body: InboundBody, account: AccountId, services: ServicesDep
) -> Envelope[InboundData]:
    """The customer's message, answered synchronously; without `session_id` it goes to the
    customer's active session with the agent, or one is opened."""
    answer = await services.osvi.inbound(
        account, body.agent_uuid, body.customer_id, body.content, body.session_id
    )
    data = InboundData(
        session_id=answer.session_id,
        reply=answer.reply,
        mode=_mode(answer.mode),
        help_requested=answer.help_requested,
    )
    return Envelope[InboundData](success=True, data=data)


@router.get("/session/active")
async def active_session(
    account: AccountId,
    services: ServicesDep,
    customer_id: Annotated[str, Query(min_length=1, max_length=256)],
    agent_uuid: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
) -> Envelope[OsviSessionObject] | Envelope[dict[str, OsviSessionObject]]:
    """With `agent_uuid`: the customer's active session with that agent (404 if none);
    without: every active session of the customer, keyed by agent id."""
    if agent_uuid is not None:
        session = await services.osvi.active(account, customer_id, agent_uuid)
        return Envelope[OsviSessionObject](success=True, data=session_object(session))
    found = await services.osvi.active_by_agent(account, customer_id)
    by_agent = {agent_id: session_object(session) for agent_id, session in found.items()}
    return Envelope[dict[str, OsviSessionObject]](success=True, data=by_agent)


@router.post("/session/{session_id}/inject_context")
async def inject_context(
    session_id: str, body: InjectContextBody, account: AccountId, services: ServicesDep
) -> Envelope[ContextData]:
    """One more context string; the 5 most recent are kept, oldest dropped."""
    context = await services.osvi.add_context(account, session_id, body.context)
    return Envelope[ContextData](
        success=True, data=ContextData(session_id=session_id, context=context)
    )


@router.post("/session/{session_id}/support", response_model_exclude_unset=True)
async def support(
    session_id: str, body: SupportBody, account: AccountId, services: ServicesDep
) -> Envelope[SupportData]:
    """`takeover` (mode `support`), `tell` (guidance and a reply now), `whisper` (guidance for
    the next turn), `end` (mode `ai` again), `close`; or, with only `message`, the operator's
    message to the customer (while in `support` mode)."""
    outcome = await services.osvi.support(
        account, session_id, body.command, body.message, body.operator(account)
    )
    data = SupportData(state="ok", session_id=session_id, command=outcome.command)
    if outcome.command == SupportCommand.TELL:
        data.reply = outcome.reply
    if outcome.command == SupportCommand.TAKEOVER:
        data.active_human = outcome.active_human
    return Envelope[SupportData](success=True, data=data)
