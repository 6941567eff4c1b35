"""Domain models shared by the API, the workflows and the activities.

These are the values that travel through Temporal (with the pydantic data converter), so
fields are only ever added, with defaults, never renamed.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

FINISH_THE_CONVERSATION = "finishTheConversation"
BUILTIN_TOOLS = frozenset({FINISH_THE_CONVERSATION})
# Keys the server sets itself before each LLM call; clients cannot override them.
RESERVED_TEMPLATE_KEYS = frozenset({"channel", "sip_endpoint"})
_TEMPLATE_VARIABLE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


class FinishReason(StrEnum):
    USER_END = "user_end"
    AGENT_FINISH = "agent_finish"
    TTL = "ttl"
    ERROR = "error"


class SessionStatus(StrEnum):
    ACTIVE = "active"
    FINAL = "final"


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ModelConfig(Frozen):
    provider: Literal["openai", "scripted"]
    name: str = Field(default="gpt-4o-mini", min_length=1, max_length=200)
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1, le=200_000)


TOOL_NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
SECRET_MASK = "********"


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
    parameters: dict[str, Any] = Field(
        default_factory=lambda: {"type": "object", "properties": {}}
    )
    url: str = Field(min_length=1, max_length=2000)
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    # Header values are treated as secrets: never returned by the API, never in history.
    headers: dict[str, str] = Field(default_factory=dict, max_length=32)
    timeout_seconds: float = Field(default=10.0, gt=0, le=120)

    @field_validator("parameters")
    @classmethod
    def _parameters_are_a_json_schema(cls, schema: dict[str, Any]) -> dict[str, Any]:
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

    @model_validator(mode="after")
    def _exactly_one_transport(self) -> McpServer:
        if (self.url is None) == (self.command is None):
            raise ValueError("an MCP server needs exactly one of `url` or `command`")
        return self


class McpTools(Frozen):
    type: Literal["mcp"] = "mcp"
    server: McpServer
    allowed_tools: list[str] | None = None


ToolConfig = Annotated[BuiltinTool | WebhookTool | McpTools, Field(discriminator="type")]


class StructuredOutput(Frozen):
    name: str = Field(pattern=TOOL_NAME_PATTERN)
    schema_: dict[str, Any] = Field(alias="schema")

    model_config = ConfigDict(
        frozen=True, extra="forbid", populate_by_name=True, serialize_by_alias=True
    )

    @field_validator("schema_")
    @classmethod
    def _is_a_json_schema(cls, schema: dict[str, Any]) -> dict[str, Any]:
        check_json_schema(schema)
        return schema


class AnalysisSettings(Frozen):
    summary_prompt: str | None = Field(default=None, max_length=20_000)
    structured_outputs: list[StructuredOutput] = Field(default_factory=list, max_length=32)


class CompletionWebhook(Frozen):
    url: str = Field(min_length=1, max_length=2000)
    secret: str = Field(min_length=16, max_length=512)


def check_json_schema(schema: dict[str, Any]) -> None:
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as error:
        where = "/".join(str(part) for part in error.path) or "(root)"
        raise ValueError(f"not a valid JSON schema at {where}: {error.message}") from None


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
    def _tool_names_unique(self) -> AgentSpec:
        names = [tool.name for tool in self.tools if not isinstance(tool, McpTools)]
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
        webhook = self.webhook.model_copy(update={"secret": SECRET_MASK}) if self.webhook else None
        return self.model_copy(update={"tools": tools, "webhook": webhook})


class AgentSnapshot(Frozen):
    """An agent frozen at session open: the session uses this for its whole lifetime."""

    id: str
    version: int
    spec: AgentSpec
    model: ModelConfig

    def has_builtin(self, name: str) -> bool:
        return any(t.type == "builtin" and t.name == name for t in self.spec.tools)


def render_template(template: str, variables: dict[str, Any]) -> str:
    """Fill `{{name}}` variables; a missing variable renders as empty text."""

    def value(match: re.Match[str]) -> str:
        found = variables.get(match.group(1))
        return "" if found is None else str(found)

    return _TEMPLATE_VARIABLE.sub(value, template)


class ToolCall(BaseModel):
    id: str
    name: str
    arguments: str = "{}"
    response: str | None = None


class Message(BaseModel):
    role: Literal["user", "assistant", "system"]
    content: str | None = None
    tool_calls: list[ToolCall] = Field(default_factory=list)
    time: datetime


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
