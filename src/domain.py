"""Domain models shared by the API, the workflows and the activities.

These are the values that travel through Temporal (with the pydantic data converter), so
fields are only ever added, with defaults, never renamed.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from src.tools import json_schemas

FINISH_THE_CONVERSATION = "finishTheConversation"
# Asks for a human operator (sets the session's `help_requested`); the reply still goes out.
REQUEST_HUMAN = "requestHuman"
BUILTIN_TOOLS = frozenset({FINISH_THE_CONVERSATION, REQUEST_HUMAN})
# The most recent context strings a session keeps (POST /chats/{id}/context), oldest first.
CONTEXT_KEPT = 5
# Keys the server sets itself before each LLM call; clients cannot override them.
CONTEXT_VARIABLE = "context"  # the session's context strings, one per line
RESERVED_TEMPLATE_KEYS = frozenset({"channel", "sip_endpoint", CONTEXT_VARIABLE})
_TEMPLATE_VARIABLE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]{0,63})\s*\}\}")
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
# RFC 9110 `token`; a value may hold no control character but tab (no CR/LF: header injection).
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}")
_HEADER_VALUE_FORBIDDEN = re.compile("[\x00-\x08\x0a-\x1f\x7f]")

# Validation context for configs read back from the database: rules added after a config was
# saved must not make it unreadable (the runtime guards in json_schemas still hold for it).
FROM_STORAGE: dict[str, Any] = {"from_storage": True}

# What the user reads instead of a model answer once a session's budget is used up, when the
# agent has no `budget_message`.
DEFAULT_BUDGET_MESSAGE = (
    "I'm sorry, this conversation has reached its limit and has to end here. Thank you!"
)
# Agent fields added after snapshots were first stored: left out of a snapshot's hash while
# unset, so a stored snapshot keeps the id it was saved under.
_SPEC_FIELDS_HASHED_WHEN_SET = (
    "budget_usd",
    "budget_message",
    "human_handoff",
    "approval_timeout_seconds",
)
# The same for tool fields, left out while they hold their default.
_TOOL_FIELDS_HASHED_WHEN_SET: dict[str, object] = {
    "requires_approval": False,
    "payload": "parley",
}


def _from_storage(info: ValidationInfo) -> bool:
    return bool(info.context and info.context.get("from_storage"))


def check_text(value: Any, where: str = "text") -> None:
    """Refuse NUL characters and lone surrogates anywhere in a JSON-like value: PostgreSQL
    cannot store the first, and neither can be encoded as UTF-8."""
    if isinstance(value, str):
        if _UNSTORABLE.search(value):
            raise ValueError(f"{where} contains a NUL character or an unpaired surrogate")
    elif isinstance(value, dict):
        for key, item in value.items():
            check_text(key, where)
            check_text(item, where)
    elif isinstance(value, list | tuple):
        for item in value:
            check_text(item, where)


class FinishReason(StrEnum):
    USER_END = "user_end"
    AGENT_FINISH = "agent_finish"
    TTL = "ttl"
    ERROR = "error"
    BUDGET = "budget"  # the session's LLM cost reached its budget (budget_usd)
    OPT_OUT = "opt_out"  # the person texted STOP (or another opt-out keyword)


class SessionStatus(StrEnum):
    ACTIVE = "active"
    FINAL = "final"


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# What the offline scripted model is called in the Temporal UI, in usage and in the price
# table (free): never a paid model's name.
SCRIPTED_MODEL = "scripted"
DEFAULT_OPENAI_MODEL = "gpt-4o-mini"


class ModelConfig(Frozen):
    provider: Literal["openai", "scripted"]
    # Without a name: DEFAULT_OPENAI_MODEL, or SCRIPTED_MODEL for the scripted provider.
    name: str = Field(default=DEFAULT_OPENAI_MODEL, min_length=1, max_length=200)
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1, le=200_000)

    @model_validator(mode="before")
    @classmethod
    def _scripted_model_by_its_own_name(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("provider") == "scripted" and "name" not in data:
            return {**data, "name": SCRIPTED_MODEL}
        return data


TOOL_NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
SECRET_MASK = "********"


def _not_the_mask(value: str) -> str:
    if value == SECRET_MASK:
        raise ValueError("this is the masked value the API shows; send the real secret")
    return value


def _sendable_headers(headers: dict[str, str], info: ValidationInfo) -> dict[str, str]:
    """Headers that can go on the wire as they are; the message names the header, never the
    value (header values are secrets)."""
    for name, value in headers.items():
        _not_the_mask(value)
        if _from_storage(info):
            continue
        if not _HEADER_NAME.fullmatch(name):
            raise ValueError(f"header name {name[:64]!r} is not a valid HTTP header name")
        if _HEADER_VALUE_FORBIDDEN.search(value):
            raise ValueError(
                f"header {name!r}: the value contains a line break (CR or LF) or another "
                "control character"
            )
    return headers


class BuiltinTool(Frozen):
    type: Literal["builtin"] = "builtin"
    name: str

    @field_validator("name")
    @classmethod
    def _known_builtin(cls, name: str) -> str:
        if name not in BUILTIN_TOOLS:
            raise ValueError(f"unknown built-in tool {name!r}; known: {sorted(BUILTIN_TOOLS)}")
        return name


class WebhookTool(Frozen):
    """An HTTP endpoint the agent can call; arguments go as JSON body (query for GET)."""

    type: Literal["webhook"] = "webhook"
    name: str = Field(pattern=TOOL_NAME_PATTERN)
    description: str = Field(default="", max_length=4000)
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    url: str = Field(min_length=1, max_length=2000)
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    # Header values are treated as secrets: never returned by the API, never in history.
    headers: dict[str, str] = Field(default_factory=dict, max_length=32)
    timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    payload: Literal["parley", "vapi"] = Field(
        default="parley",
        description="`parley`: the arguments are the body; `vapi`: Vapi's tool-calls message, "
        'answered with {"results": [{"toolCallId", "result"}]} (a Vapi assistant\'s tools).',
    )
    requires_approval: bool = Field(
        default=False,
        description="Each call waits for an operator's approval (POST /chats/{id}/approvals/"
        "{tool_call_id}) before it is made; see the agent's approval_timeout_seconds.",
    )

    _headers = field_validator("headers")(_sendable_headers)

    @field_validator("parameters")
    @classmethod
    def _parameters_are_a_json_schema(
        cls, schema: dict[str, Any], info: ValidationInfo
    ) -> dict[str, Any]:
        if not _from_storage(info):
            check_json_schema(schema)
        if schema.get("type") != "object":
            raise ValueError('tool parameters must be a JSON schema of "type": "object"')
        return schema


class McpServer(Frozen):
    """An MCP server: a streamable-HTTP `url`, or a stdio `command` (allow-listed)."""

    url: str | None = Field(default=None, max_length=2000)
    command: list[str] | None = Field(default=None, min_length=1, max_length=64)
    headers: dict[str, str] = Field(default_factory=dict, max_length=32)
    timeout_seconds: float = Field(default=30.0, gt=0, le=300)

    _headers = field_validator("headers")(_sendable_headers)

    @model_validator(mode="after")
    def _exactly_one_transport(self) -> McpServer:
        if (self.url is None) == (self.command is None):
            raise ValueError("an MCP server needs exactly one of `url` or `command`")
        return self


class McpTools(Frozen):
    type: Literal["mcp"] = "mcp"
    server: McpServer
    allowed_tools: list[str] | None = None


# A squad member's name: it names the handoff function too (`handoff_to_<member>`).
MEMBER_NAME_PATTERN = r"^[A-Za-z0-9_-]{1,52}$"
HANDOFF_PREFIX = "handoff_to_"


class LastMessages(Frozen):
    last_messages: int = Field(ge=1, le=1000)


# What of the conversation the next member reads: all of it, none (from the user's last
# message on), or the last n messages.
HandoffContext = Literal["all", "none"] | LastMessages


class HandoffDestination(Frozen):
    member: str = Field(pattern=MEMBER_NAME_PATTERN)
    description: str = Field(default="", max_length=4000)
    context: HandoffContext = "all"


class HandoffTool(Frozen):
    """Lets a squad member hand the conversation to another: one function per destination,
    `handoff_to_<member>` with `{"reason"}`."""

    type: Literal["handoff"] = "handoff"
    destinations: list[HandoffDestination] = Field(min_length=1, max_length=32)

    @model_validator(mode="after")
    def _members_unique(self) -> HandoffTool:
        members = [d.member for d in self.destinations]
        if len(set(members)) != len(members):
            raise ValueError("handoff destinations must name different members")
        return self


ToolConfig = Annotated[
    BuiltinTool | WebhookTool | McpTools | HandoffTool, Field(discriminator="type")
]


class StructuredOutput(Frozen):
    name: str = Field(pattern=TOOL_NAME_PATTERN)
    schema_: dict[str, Any] = Field(alias="schema")

    model_config = ConfigDict(
        frozen=True, extra="forbid", populate_by_name=True, serialize_by_alias=True
    )

    @field_validator("schema_")
    @classmethod
    def _is_a_json_schema(cls, schema: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        if not _from_storage(info):
            check_json_schema(schema)
        return schema


class AnalysisSettings(Frozen):
    summary_prompt: str | None = Field(default=None, max_length=20_000)
    structured_outputs: list[StructuredOutput] = Field(default_factory=list, max_length=32)


WebhookEvent = Literal[
    "session.opened",
    "message",
    "message.delivery",
    "session.finished",
    "session.help_requested",
    "session.help_unanswered",
    "session.takeover",
    "session.handback",
    "tool.approval_requested",
]


def _default_webhook_events() -> list[WebhookEvent]:
    return ["session.finished"]


class CompletionWebhook(Frozen):
    """Where the agent's events go, signed with `secret` (and with `previous_secrets` too while
    a secret rotates, as several comma-separated `v1=` signatures)."""

    url: str = Field(min_length=1, max_length=2000)
    secret: str = Field(min_length=16, max_length=512)
    previous_secrets: list[str] = Field(default_factory=list, max_length=4)
    events: list[WebhookEvent] = Field(default_factory=_default_webhook_events)

    _secret = field_validator("secret")(_not_the_mask)

    @field_validator("previous_secrets")
    @classmethod
    def _previous_not_masked(cls, secrets: list[str]) -> list[str]:
        return [_not_the_mask(secret) for secret in secrets]

    @property
    def signing_secrets(self) -> list[str]:
        return [self.secret, *self.previous_secrets]


def check_json_schema(schema: dict[str, Any]) -> None:
    """Refuse, without quoting it, a schema Parley will not validate against: see json_schemas."""
    try:
        json_schemas.check_schema(schema)
    except json_schemas.SchemaRefused as refused:
        raise ValueError(f"not a usable JSON schema at {refused}") from None


# An agent's session budget, the same in a spec and in a patch.
BudgetUsd = Annotated[
    float | None,
    Field(
        gt=0,
        allow_inf_nan=False,
        description="A session's LLM cost in USD past which the agent stops answering and the "
        "session ends (final_reason `budget`); none: PARLEY_SESSION_BUDGET_USD.",
    ),
]
BudgetMessage = Annotated[
    str | None,
    Field(
        min_length=1,
        max_length=16_000,
        description="What the user reads instead of an answer once the budget is used up.",
    ),
]


# How long a tool call waits for an operator's approval before it is refused by itself.
ApprovalTimeout = Annotated[int | None, Field(default=None, ge=1, le=30 * 86_400)]
DEFAULT_APPROVAL_TIMEOUT_SECONDS = 3600


class HumanHandoff(Frozen):
    """The agent's timers around a human operator, in seconds (at least
    PARLEY_MIN_TTL_SECONDS): `wait_seconds` after a help request nobody took over, the
    holding message goes to the user (once) and `session.help_unanswered` fires;
    `operator_idle_seconds` after a user message an operator holding the session left
    unanswered, the agent takes the session back and answers it."""

    wait_seconds: int | None = Field(default=None, ge=1, le=604_800)
    holding_message: str | None = Field(default=None, min_length=1, max_length=2000)
    operator_idle_seconds: int | None = Field(default=None, ge=1, le=604_800)


class AgentSpec(Frozen):
    """What a client says an agent is; the server adds id, version and timestamps."""

    name: str = Field(min_length=1, max_length=200)
    system_prompt: str = Field(default="", max_length=100_000)
    first_message: str | None = Field(default=None, max_length=16_000)
    model: ModelConfig | None = None
    tools: list[ToolConfig] = Field(default_factory=list, max_length=128)
    analysis: AnalysisSettings | None = None
    webhook: CompletionWebhook | None = None
    default_ttl_seconds: int | None = Field(default=None, ge=1, le=86_400)
    max_tool_steps: int | None = Field(default=None, ge=1, le=64)
    budget_usd: BudgetUsd = None
    budget_message: BudgetMessage = None
    human_handoff: HumanHandoff | None = None
    approval_timeout_seconds: ApprovalTimeout = None
    variables: dict[str, Any] = Field(
        default_factory=dict, description="Default template variable values."
    )

    @field_validator("system_prompt", "first_message")
    @classmethod
    def _template_braces_balanced(cls, text: str | None) -> str | None:
        if text is not None:
            stripped = _TEMPLATE_VARIABLE.sub("", text)
            if "{{" in stripped or "}}" in stripped:
                raise ValueError("template variables must look like {{name}} (letters, digits, _)")
        return text

    @model_validator(mode="after")
    def _storable_text(self) -> AgentSpec:
        check_text(self.model_dump(mode="json", by_alias=True), "the agent config")
        return self

    @model_validator(mode="after")
    def _tool_names_unique(self) -> AgentSpec:
        names = [tool.name for tool in self.tools if isinstance(tool, BuiltinTool | WebhookTool)]
        names += [
            HANDOFF_PREFIX + d.member
            for tool in self.tools
            if isinstance(tool, HandoffTool)
            for d in tool.destinations
        ]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"tools: duplicate tool names {duplicates}")
        return self

    def masked(self) -> AgentSpec:
        """The spec as the API shows it: secrets replaced by a mask."""
        tools = [
            tool.model_copy(update={"headers": dict.fromkeys(tool.headers, SECRET_MASK)})
            if isinstance(tool, WebhookTool)
            else tool.model_copy(
                update={
                    "server": tool.server.model_copy(
                        update={"headers": dict.fromkeys(tool.server.headers, SECRET_MASK)}
                    )
                }
            )
            if isinstance(tool, McpTools)
            else tool
            for tool in self.tools
        ]
        webhook = (
            self.webhook.model_copy(
                update={
                    "secret": SECRET_MASK,
                    "previous_secrets": [SECRET_MASK for _ in self.webhook.previous_secrets],
                }
            )
            if self.webhook
            else None
        )
        return self.model_copy(update={"tools": tools, "webhook": webhook})


class McpToolDefinition(Frozen):
    """A tool an MCP server offered when the session opened."""

    name: str
    description: str = ""
    input_schema: dict[str, Any] = Field(default_factory=dict)
    server_index: int = Field(description="Index of its `mcp` entry in the agent's tools.")


ToolKind = Literal["builtin", "webhook", "mcp", "handoff"]


class AgentPatch(Frozen):
    """Top-level agent fields to change: an agent update, or a session's `agent_overrides`
    (where `variables` are merged into the agent's instead of replacing them)."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    system_prompt: str | None = Field(default=None, max_length=100_000)
    first_message: str | None = Field(default=None, max_length=16_000)
    model: ModelConfig | None = None
    tools: list[ToolConfig] | None = Field(default=None, max_length=128)
    analysis: AnalysisSettings | None = None
    webhook: CompletionWebhook | None = None
    default_ttl_seconds: int | None = Field(default=None, ge=1, le=86_400)
    max_tool_steps: int | None = Field(default=None, ge=1, le=64)
    budget_usd: BudgetUsd = None
    budget_message: BudgetMessage = None
    human_handoff: HumanHandoff | None = None
    approval_timeout_seconds: ApprovalTimeout = None
    variables: dict[str, Any] | None = None

    def apply(self, spec: AgentSpec, merge_variables: bool) -> AgentSpec:
        changes = {name: getattr(self, name) for name in self.model_fields_set}
        if merge_variables and self.variables is not None:
            changes["variables"] = {**spec.variables, **self.variables}
        data = spec.model_dump(mode="json")
        data.update(
            {
                name: value.model_dump(mode="json")
                if isinstance(value, BaseModel)
                else [v.model_dump(mode="json") if isinstance(v, BaseModel) else v for v in value]
                if isinstance(value, list)
                else value
                for name, value in changes.items()
            }
        )
        return AgentSpec.model_validate(data)


class AgentSnapshot(Frozen):
    """An agent frozen for a session (or a stateless conversation), stored content-addressed
    in the database. It holds secrets, so workflows get only its `SessionAgent` summary."""

    id: str
    version: int
    spec: AgentSpec
    model: ModelConfig
    mcp_tools: list[McpToolDefinition] = Field(default_factory=list)
    mcp_discovered: bool = False

    @property
    def snapshot_id(self) -> str:
        config = self.model_dump(mode="json")
        for name in _SPEC_FIELDS_HASHED_WHEN_SET:
            if config["spec"][name] is None:
                del config["spec"][name]
        for tool in config["spec"]["tools"]:
            for name, default in _TOOL_FIELDS_HASHED_WHEN_SET.items():
                if tool.get(name, default) == default:
                    tool.pop(name, None)
        canonical = json.dumps(config, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    @property
    def needs_discovery(self) -> bool:
        return not self.mcp_discovered and any(isinstance(t, McpTools) for t in self.spec.tools)

    def tool_kinds(self) -> dict[str, ToolKind]:
        kinds: dict[str, ToolKind] = {tool.name: "mcp" for tool in self.mcp_tools}
        for tool in self.spec.tools:
            if isinstance(tool, BuiltinTool | WebhookTool):
                kinds[tool.name] = tool.type
        for destination in self.handoffs():
            kinds[HANDOFF_PREFIX + destination.member] = "handoff"
        return kinds

    def handoffs(self) -> list[HandoffDestination]:
        return [d for t in self.spec.tools if isinstance(t, HandoffTool) for d in t.destinations]

    def webhook_tool(self, name: str) -> WebhookTool | None:
        return next(
            (t for t in self.spec.tools if isinstance(t, WebhookTool) and t.name == name), None
        )

    def summary(self) -> SessionAgent:
        return SessionAgent(
            snapshot_id=self.snapshot_id,
            id=self.id,
            version=self.version,
            model_name=self.model.name,
            tools=self.tool_kinds(),
            needs_discovery=self.needs_discovery,
            has_analysis=self.spec.analysis is not None,
            webhook_events=list(self.spec.webhook.events) if self.spec.webhook else [],
            human_handoff=self.spec.human_handoff,
            approval_required=[
                tool.name
                for tool in self.spec.tools
                if isinstance(tool, WebhookTool) and tool.requires_approval
            ],
            approval_timeout_seconds=self.spec.approval_timeout_seconds
            or DEFAULT_APPROVAL_TIMEOUT_SECONDS,
            handoffs={HANDOFF_PREFIX + d.member: d for d in self.handoffs()},
        )


class SquadMember(Frozen):
    """One agent of a squad, by id (its latest version at each open) or inline."""

    name: str = Field(pattern=MEMBER_NAME_PATTERN)
    agent_id: str | None = Field(default=None, min_length=1, max_length=64)
    agent: AgentSpec | None = None
    agent_overrides: AgentPatch | None = None

    @model_validator(mode="after")
    def _one_agent(self) -> SquadMember:
        if (self.agent_id is None) == (self.agent is None):
            raise ValueError(f"member {self.name!r}: give exactly one of `agent_id` or `agent`")
        return self


class SquadSpec(Frozen):
    """Agents that hand a conversation to each other (a `handoff` tool); the first starts."""

    name: str = Field(min_length=1, max_length=200)
    members: list[SquadMember] = Field(min_length=1, max_length=16)

    @model_validator(mode="after")
    def _names_unique(self) -> SquadSpec:
        names = [member.name for member in self.members]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"members: duplicate member names {duplicates}")
        return self

    def masked(self) -> SquadSpec:
        members = [
            m.model_copy(update={"agent": m.agent.masked()}) if m.agent is not None else m
            for m in self.members
        ]
        return self.model_copy(update={"members": members})


class SquadPatch(Frozen):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    members: list[SquadMember] | None = Field(default=None, min_length=1, max_length=16)


class SessionAgent(BaseModel):
    """What a workflow knows of its agent: a reference and tool names, no prompts, no secrets."""

    snapshot_id: str
    id: str
    version: int
    model_name: str
    tools: dict[str, ToolKind] = Field(default_factory=dict)
    needs_discovery: bool = False
    has_analysis: bool = False
    webhook_events: list[str] = Field(default_factory=list)
    human_handoff: HumanHandoff | None = None
    # Tools whose calls wait for an operator's approval, and for how long at most.
    approval_required: list[str] = Field(default_factory=list)
    approval_timeout_seconds: int = DEFAULT_APPROVAL_TIMEOUT_SECONDS
    # A squad member's handoff functions, by function name.
    handoffs: dict[str, HandoffDestination] = Field(default_factory=dict)

    def has_builtin(self, name: str) -> bool:
        return self.tools.get(name) == "builtin"


def template_variables(template: str) -> list[str]:
    return [match.group(1) for match in _TEMPLATE_VARIABLE.finditer(template)]


class TemplateTooLarge(ValueError):
    """A template whose variables would render it past the size limit."""


def render_template(
    template: str, variables: dict[str, Any], max_chars: int | None = None
) -> tuple[str, list[str]]:
    """Fill `{{name}}` variables. A missing variable renders as empty text and is reported
    in the second element, so the caller can record it. Past `max_chars` characters, raises
    TemplateTooLarge as soon as that is known: a short template repeating a long variable
    would otherwise render to any size."""
    missing: list[str] = []
    texts: dict[str, str | None] = {}
    pieces: list[str] = []
    size, position = 0, 0
    for match in _TEMPLATE_VARIABLE.finditer(template):
        name = match.group(1)
        if name not in texts:
            value = variables.get(name)
            texts[name] = None if value is None else str(value)
        text = texts[name]
        if text is None:
            missing.append(name)
        pieces += (template[position : match.start()], text or "")
        size += match.start() - position + len(text or "")
        position = match.end()
        if max_chars is not None and size > max_chars:
            raise _too_large(max_chars)
    pieces.append(template[position:])
    size += len(template) - position
    if max_chars is not None and size > max_chars:
        raise _too_large(max_chars)
    return "".join(pieces), missing


def _too_large(max_chars: int) -> TemplateTooLarge:
    return TemplateTooLarge(
        f"renders to more than {max_chars:,} characters with these variables "
        "(the limit is PARLEY_MAX_RENDERED_TEMPLATE_CHARS)"
    )


class ToolCall(BaseModel):
    id: str
    name: str
    arguments: str = "{}"
    response: str | None = None


class Usage(BaseModel):
    """Tokens one LLM call used."""

    model: str = Field(description="The model the agent is configured with.")
    served_model: str | None = Field(
        default=None, description="The model name the endpoint answered with, when it said one."
    )
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Attachment(BaseModel):
    """A file that came with a message (an SMS's media), by URL: never downloaded."""

    url: str
    content_type: str | None = None


class PartDelivery(BaseModel):
    """How one text of a message sent by SMS fared (a long message is several texts)."""

    part: int
    # The provider's: queued, sent, delivered, undelivered, failed (and Twilio's rarer
    # accepted, scheduled, sending, read, canceled: src/sms/delivery.py); "sending" while the
    # provider's answer is unknown; "not_sent": refused, or dropped (the recipient opted out).
    status: str
    provider_message_id: str | None = None
    error_code: str | None = None
    error_message: str | None = None


class Operator(BaseModel):
    """A human who takes a session over (the console's user, or any API caller's)."""

    id: str = Field(min_length=1, max_length=200)
    name: str = Field(min_length=1, max_length=200)

    @field_validator("id", "name")
    @classmethod
    def _storable(cls, text: str) -> str:
        if not text.strip():
            raise ValueError("must not be blank")
        check_text(text, "the operator")
        return text


class Author(BaseModel):
    """Who wrote an assistant message: the agent (`ai`) or a human operator (`human`)."""

    kind: Literal["ai", "human"]
    agent_id: str | None = None
    id: str | None = None
    name: str | None = None

    @classmethod
    def ai(cls, agent_id: str) -> Author:
        return cls(kind="ai", agent_id=agent_id)

    @classmethod
    def human(cls, operator: Operator) -> Author:
        return cls(kind="human", id=operator.id, name=operator.name)


class SessionMode(StrEnum):
    AI = "ai"  # the agent answers
    HUMAN = "human"  # a human operator holds the session; the agent stays silent


class Message(BaseModel):
    role: Literal["user", "assistant", "system"]
    content: str | None = None
    tool_calls: list[ToolCall] = Field(default_factory=list)
    time: datetime
    usage: Usage | None = Field(default=None, description="Set on messages an LLM produced.")
    attachments: list[Attachment] = Field(
        default_factory=list, description="Media that came with the message (SMS), by URL."
    )
    delivery: list[PartDelivery] | None = Field(
        default=None,
        description="SMS sessions: one entry per text the message was sent as.",
    )
    author: Author | None = Field(
        default=None,
        description="Assistant messages: the agent (`ai`) or the human operator who wrote it.",
    )


class StructuredOutputResult(BaseModel):
    status: Literal["ok", "failed"]
    value: Any = None
    error: str | None = None
    attempts: int = 0


class Transfer(BaseModel):
    """A squad member handed the conversation to another (a handoff tool call)."""

    from_member: str
    to_member: str
    from_agent_id: str
    to_agent_id: str
    reason: str
    time: datetime


class Artifact(BaseModel):
    """What post-conversation analysis found, and a squad session's transfers."""

    summary: str | None = None
    summary_error: str | None = None
    structured_outputs: dict[str, StructuredOutputResult] = Field(default_factory=dict)
    transfers: list[Transfer] = Field(default_factory=list)


class CostItem(BaseModel):
    type: Literal["llm", "analysis"]
    model: str
    prompt_tokens: int
    completion_tokens: int
    cost: float
    priced: bool = Field(description="False when the model is not in the price table.")


class SessionSummary(BaseModel):
    """A chat session as lists show it: no transcript, no costs (both are in SessionView)."""

    id: str
    agent_id: str
    channel: str
    created_time: datetime
    last_activity: datetime
    ttl_seconds: int
    is_final: bool
    status: SessionStatus
    final_reason: FinishReason | None = None
    mode: SessionMode = Field(
        default=SessionMode.AI, description="`human` while an operator holds the session."
    )
    help_requested: bool = Field(
        default=False, description="The agent asked for a human (requestHuman), none took over."
    )
    active_human: Operator | None = None
    squad_id: str | None = Field(
        default=None, description="The squad the session runs; `agent_id` is its active member."
    )


class PendingApproval(BaseModel):
    """A tool call waiting for an operator's approval."""

    tool_call_id: str
    name: str
    arguments: str
    requested_time: datetime


class SessionView(BaseModel):
    """The public projection of a chat session."""

    id: str
    agent_id: str
    channel: str
    messages: list[Message]
    created_time: datetime
    last_activity: datetime
    ttl_seconds: int
    is_final: bool
    status: SessionStatus
    final_reason: FinishReason | None = None
    artifact: Artifact | None = Field(
        default=None, description="Post-conversation analysis; set once it has completed."
    )
    cost: float = Field(default=0.0, description="USD, from the price table in settings.")
    costs: list[CostItem] = Field(default_factory=list)
    mode: SessionMode = Field(
        default=SessionMode.AI, description="`human` while an operator holds the session."
    )
    help_requested: bool = Field(
        default=False, description="The agent asked for a human (requestHuman), none took over."
    )
    active_human: Operator | None = None
    context: list[str] = Field(
        default_factory=list, description=f"The {CONTEXT_KEPT} most recent context strings."
    )
    pending_approvals: list[PendingApproval] = Field(
        default_factory=list, description="Tool calls waiting for an operator's approval."
    )
    squad_id: str | None = Field(
        default=None, description="The squad the session runs; `agent_id` is its active member."
    )
