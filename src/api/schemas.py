"""Request and response bodies of the native API (`/api/v1`)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from src.domain import (
    CONTEXT_KEPT,
    RESERVED_TEMPLATE_KEYS,
    AgentPatch,
    AgentSpec,
    AnalysisSettings,
    Message,
    ModelConfig,
    Operator,
    SessionMode,
    SessionSummary,
    SessionView,
    ToolCall,
    check_text,
)
from src.services.phone_numbers import NewPhoneNumber, PhoneNumberPatch
from src.templates import check_timezone
from src.widget.access import VISITOR_HEADER
from src.widget.origins import OriginInvalid, parse_origin_pattern

ExternalIdValue = str | int | bool


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _context_text(text: str) -> str:
    if not text.strip():
        raise ValueError("a context string may not be empty")
    check_text(text, "context")
    return text


def check_template_values(value: dict[str, Any], field: str) -> dict[str, Any]:
    """A session's template variables as a caller gives them (`additional_data`, OSVI's
    `input_fields`): storable, no reserved key, at most 32,000 characters of JSON."""
    check_text(value, field)
    reserved = RESERVED_TEMPLATE_KEYS & value.keys()
    if reserved:
        raise ValueError(f"reserved keys are set by the server: {sorted(reserved)}")
    if len(json.dumps(value)) > 32_000:
        raise ValueError(f"{field} is limited to 32,000 characters of JSON")
    check_timezone(value)
    return value


# One context string: what the model should know (who the user is, an order, a page).
ContextText = Annotated[str, Field(max_length=4000), AfterValidator(_context_text)]


class OpenChatRequest(Strict):
    agent_id: str | None = Field(default=None, min_length=1, max_length=64)
    agent: AgentSpec | None = Field(
        default=None, description="An inline agent config, instead of `agent_id`."
    )
    agent_overrides: AgentPatch | None = Field(
        default=None,
        description="Applied on top of the agent at open: `variables` (merged) and any "
        "top-level agent field (replaced).",
    )
    squad_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="A squad instead of an agent: its first member starts, every member is "
        "frozen at open.",
    )
    channel: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$", examples=["web"])
    external_id: dict[str, ExternalIdValue] | None = Field(
        default=None,
        description="Identifies the conversation's endpoint (e.g. a phone number pair); "
        "opens for the same endpoint while a session is active return that session.",
        examples=[{"phone": "+15550100"}],
    )
    ttl_seconds: int | None = Field(default=None, description="Inactivity timeout, 60-86400.")
    additional_data: dict[str, Any] = Field(default_factory=dict)
    context: list[ContextText] = Field(
        default_factory=list,
        max_length=CONTEXT_KEPT,
        description=f"Up to {CONTEXT_KEPT} context strings the model reads on every turn.",
    )

    @model_validator(mode="after")
    def _one_agent(self) -> OpenChatRequest:
        given = [self.agent_id, self.agent, self.squad_id]
        if sum(value is not None for value in given) != 1:
            raise ValueError("give exactly one of `agent_id`, an inline `agent` or `squad_id`")
        if self.squad_id is not None and self.agent_overrides is not None:
            raise ValueError(
                "agent_overrides apply to one agent; a squad's members carry their own"
            )
        return self

    @field_validator("external_id")
    @classmethod
    def _external_id_shape(
        cls, value: dict[str, ExternalIdValue] | None
    ) -> dict[str, ExternalIdValue] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("external_id must have at least one key")
        if len(value) > 16 or any(not key or len(key) > 64 for key in value):
            raise ValueError("external_id allows at most 16 keys of 1-64 characters")
        if any(isinstance(v, str) and len(v) > 256 for v in value.values()):
            raise ValueError("external_id values are at most 256 characters")
        check_text(value, "external_id")
        return value

    @field_validator("additional_data")
    @classmethod
    def _additional_data_shape(cls, value: dict[str, Any]) -> dict[str, Any]:
        return check_template_values(value, "additional_data")


class SendMessageRequest(Strict):
    content: str = Field(description="The user's message.")

    @field_validator("content")
    @classmethod
    def _not_blank(cls, content: str) -> str:
        if not content.strip():
            raise ValueError("the message is empty")
        check_text(content, "the message")
        return content


class SendMessageResponse(BaseModel):
    messages: list[Message]
    is_final: bool
    mode: SessionMode = Field(
        default=SessionMode.AI,
        description="`human`: an operator holds the session, so the message was recorded "
        "and not answered by the agent (status 202).",
    )


def _operator_text(content: str) -> str:
    if not content.strip():
        raise ValueError("the message is empty")
    check_text(content, "the message")
    return content


OperatorText = Annotated[str, AfterValidator(_operator_text)]


class TakeoverRequest(Strict):
    operator: Operator = Field(description="Who takes the session over; shown as the author.")


class OperatorMessageRequest(Strict):
    content: OperatorText = Field(description="The operator's message to the user.")


class OperatorMessageResponse(BaseModel):
    seq: int = Field(description="The message's position in the transcript.")
    message: Message


class WhisperRequest(Strict):
    content: OperatorText = Field(description="Guidance for the agent; the user never sees it.")
    reply_now: bool = Field(default=False, description="The agent answers at once, using it.")
    operator: Operator | None = Field(
        default=None, description="Who whispers (for the audit log); default: the one holding it."
    )


class ApprovalRequest(Strict):
    approved: bool = Field(description="true: the call is made; false: the model is told no.")
    note: str | None = Field(
        default=None, max_length=2000, description="Why, for the model (when refused) and the log."
    )
    operator: Operator | None = Field(
        default=None, description="Who decides (for the audit log); default: the one holding it."
    )

    @field_validator("note")
    @classmethod
    def _storable_note(cls, note: str | None) -> str | None:
        check_text(note, "the note")
        return note


class ApprovalResponse(BaseModel):
    tool_call_id: str
    name: str
    approved: bool


class HandbackRequest(Strict):
    operator: Operator | None = Field(
        default=None, description="Who hands back (for the audit log); default: the one holding it."
    )


class AddContextRequest(Strict):
    context: ContextText


class ContextResponse(BaseModel):
    context: list[str] = Field(description=f"The {CONTEXT_KEPT} most recent, oldest first.")


class EndChatRequest(Strict):
    note: str | None = Field(default=None, max_length=4000)

    @field_validator("note")
    @classmethod
    def _storable(cls, note: str | None) -> str | None:
        check_text(note, "note")
        return note


class ChatSessionList(BaseModel):
    items: list[SessionSummary] = Field(
        description="Sessions without transcripts: read one with GET /chats/{id}."
    )
    next_cursor: str | None


class AgentResponse(BaseModel):
    """An agent version as the API shows it: secret values (the completion webhook's secret,
    tool header values) replaced by a mask. Sending the mask back is refused."""

    id: str
    version: int
    name: str
    system_prompt: str
    first_message: str | None
    model: ModelConfig | None
    tools: list[dict[str, Any]]
    analysis: AnalysisSettings | None
    webhook: dict[str, Any] | None
    default_ttl_seconds: int | None
    max_tool_steps: int | None
    budget_usd: float | None
    budget_message: str | None
    variables: dict[str, Any]
    created_time: datetime


class SquadResponse(BaseModel):
    """A squad version; inline members' secrets masked as agents' are."""

    id: str
    version: int
    name: str
    members: list[dict[str, Any]]
    created_time: datetime


class SquadList(BaseModel):
    items: list[SquadResponse]
    next_cursor: str | None


class AgentList(BaseModel):
    items: list[AgentResponse]
    next_cursor: str | None


class ErrorBody(BaseModel):
    code: str
    message: str
    details: Any = None


class ErrorResponse(BaseModel):
    error: ErrorBody


CreateAgentRequest = AgentSpec
UpdateAgentRequest = AgentPatch


class AuditEventResponse(BaseModel):
    id: int
    kind: str
    data: dict[str, Any]
    time: datetime


class AuditEventList(BaseModel):
    items: list[AuditEventResponse]
    next_cursor: str | None


class AgentReference(Strict):
    id: str = Field(min_length=1, max_length=64)


class TextChatMessage(BaseModel):
    """A transcript message as the client holds it: the server's own messages echoed back
    (extra fields such as `time` and `usage` are accepted and ignored), plus new user ones."""

    role: Literal["user", "assistant"]
    content: str | None = None
    tool_calls: list[ToolCall] = Field(default_factory=list)

    @field_validator("content")
    @classmethod
    def _storable(cls, content: str | None) -> str | None:
        check_text(content, "a message")
        return content


class TextChatRequest(Strict):
    agent: AgentReference | AgentSpec = Field(
        description='`{"id": "agent-..."}` or an inline agent config; frozen at the first turn.'
    )
    agent_overrides: AgentPatch | None = None
    messages: list[TextChatMessage] = Field(
        description="The whole transcript as last returned, then the new user message(s); "
        "at most PARLEY_MAX_TRANSCRIPT_MESSAGES messages and PARLEY_MAX_TRANSCRIPT_BYTES "
        "of text (413 past either).",
    )
    state: str | None = Field(
        default=None, max_length=20_000, description="Null on the first turn, then as returned."
    )
    additional_data: dict[str, Any] = Field(default_factory=dict)
    end_conversation: bool = False
    channel: str = Field(default="text", pattern=r"^[a-z][a-z0-9_-]{0,31}$")

    @field_validator("additional_data")
    @classmethod
    def _additional_data_shape(cls, value: dict[str, Any]) -> dict[str, Any]:
        return OpenChatRequest._additional_data_shape(value)


class TextChatResponse(BaseModel):
    messages: list[Message] = Field(description="Only the new ones: tool turns, then the reply.")
    state: str
    is_finished: bool
    correlation_id: str
    call_id: str = Field(description="Read the conversation at GET /api/v1/chats/{call_id}.")


class CreateWidgetKeyRequest(Strict):
    agent_id: str = Field(min_length=1, max_length=64)
    allowed_origins: list[str] = Field(
        min_length=1,
        max_length=50,
        description="Pages allowed to use the key: `scheme://host[:port]`, or "
        "`https://*.example.com` for every subdomain of example.com.",
        examples=[["https://shop.example.com", "https://*.example.org"]],
    )

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, origins: list[str]) -> list[str]:
        try:
            normal = [str(parse_origin_pattern(origin)) for origin in origins]
        except OriginInvalid as error:
            raise ValueError(str(error)) from None
        return list(dict.fromkeys(normal))


class WidgetKeyResponse(BaseModel):
    id: str
    agent_id: str
    key_prefix: str = Field(description="The key's first characters, to tell keys apart.")
    allowed_origins: list[str]
    created_time: datetime


class CreatedWidgetKeyResponse(WidgetKeyResponse):
    key: str = Field(description="The publishable key (`pw_...`), shown only this once.")


class WidgetKeyList(BaseModel):
    items: list[WidgetKeyResponse]
    next_cursor: str | None


class OpenWidgetSessionRequest(Strict):
    visitor_token: str | None = Field(
        default=None,
        max_length=1000,
        description="The token a previous open returned (kept in the browser's localStorage); "
        "null for a new visitor.",
    )


class WidgetSessionResponse(BaseModel):
    visitor_token: str = Field(
        description=f"Send it back in the `{VISITOR_HEADER}` header and on the next open."
    )
    session: SessionView


CreatePhoneNumberRequest = NewPhoneNumber
UpdatePhoneNumberRequest = PhoneNumberPatch


class TwilioAccountResponse(BaseModel):
    account_sid: str
    auth_token: str = Field(description="Always masked: the token is never shown again.")
    messaging_service_sid: str | None


class PhoneNumberResponse(BaseModel):
    id: str
    number: str
    provider: str
    agent_id: str | None = Field(description="The agent that answers (null for a squad's).")
    squad_id: str | None = Field(default=None, description="The squad that answers, if any.")
    twilio: TwilioAccountResponse
    ttl_seconds: int | None
    help_text: str | None
    created_time: datetime
    updated_time: datetime
    webhook_url: str = Field(
        description="Paste into Twilio's console: 'A message comes in' (HTTP POST)."
    )
    status_callback_url: str = Field(
        description="Where Twilio posts delivery statuses (Parley sends it with each text)."
    )


class PhoneNumberList(BaseModel):
    items: list[PhoneNumberResponse]
    next_cursor: str | None
