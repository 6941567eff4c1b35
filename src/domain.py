"""Domain models shared by the API, the workflows and the activities.

These are the values that travel through Temporal (with the pydantic data converter), so
fields are only ever added, with defaults, never renamed.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

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


class BuiltinTool(Frozen):
    type: Literal["builtin"] = "builtin"
    name: str

    @field_validator("name")
    @classmethod
    def _known_builtin(cls, name: str) -> str:
        if name not in BUILTIN_TOOLS:
            raise ValueError(f"unknown built-in tool {name!r}; known: {sorted(BUILTIN_TOOLS)}")
        return name


ToolConfig = Annotated[BuiltinTool, Field(discriminator="type")]


class AgentSpec(Frozen):
    """What a client says an agent is; the server adds id, version and timestamps."""

    name: str = Field(min_length=1, max_length=200)
    system_prompt: str = Field(default="", max_length=100_000)
    first_message: str | None = Field(default=None, max_length=16_000)
    model: ModelConfig | None = None
    tools: list[ToolConfig] = Field(default_factory=list, max_length=128)
    default_ttl_seconds: int | None = Field(default=None, ge=1, le=86_400)
    max_tool_steps: int | None = Field(default=None, ge=1, le=64)

    @field_validator("system_prompt")
    @classmethod
    def _template_braces_balanced(cls, prompt: str) -> str:
        stripped = _TEMPLATE_VARIABLE.sub("", prompt)
        if "{{" in stripped or "}}" in stripped:
            raise ValueError("template variables must look like {{name}} (letters, digits, _)")
        return prompt


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
