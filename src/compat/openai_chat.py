"""Chat Completions on Parley's engine: a request runs as a stateless conversation over the
client's messages, or, with X-Parley-Session-Id, as the next message of a stateful session.
The agent's tools run server-side; src/compat/openai_answers.py shapes what the turn produced."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from openai.types import Model

from src.api.routes.text_chat import check_transcript_size
from src.api.schemas import OpenChatRequest
from src.compat.openai_requests import ChatCompletionRequest, last_user_text, transcript_of
from src.config import Settings
from src.domain import AgentPatch, Message, ModelConfig, SessionMode
from src.errors import Conflict, InvalidInput, NotFound
from src.services.agents import AgentRecord, AgentService
from src.services.chat_sessions import ChatSessionService
from src.services.text_chat import TextChatService, TextChatTurn

# The channel of the conversations this face records (GET /api/v1/chats?channel=openai).
OPENAI_CHANNEL = "openai"
_FIXED_AT_OPEN = "a stateful session's agent and data are fixed when it opens"


@dataclass
class PreparedCompletion:
    """A request that passed every check: what runs it, and where its turn streams."""

    id: str
    model: str
    conversation_id: str
    turn: str
    include_usage: bool
    run: Callable[[], Awaitable[list[Message]]]


class OpenAIChat:
    def __init__(
        self,
        settings: Settings,
        text_chat: TextChatService,
        chats: ChatSessionService,
        agents: AgentService,
    ) -> None:
        self._settings = settings
        self._text_chat = text_chat
        self._chats = chats
        self._agents = agents

    async def prepare(
        self, account_id: str, request: ChatCompletionRequest, session_id: str | None
    ) -> PreparedCompletion:
        """Everything that refuses the request before it runs."""
        request.check_supported()
        if session_id is not None:
            return await self._to_session(account_id, request, session_id)
        return await self._stateless(account_id, request)

    async def _stateless(
        self, account_id: str, request: ChatCompletionRequest
    ) -> PreparedCompletion:
        transcript = transcript_of(request.messages, datetime.now(UTC))
        check_transcript_size(transcript, self._settings)
        turn = TextChatTurn(
            agent_id=request.model,
            agent_overrides=await self._model_overrides(account_id, request),
            messages=transcript,
            additional_data=_additional_data(request),
            channel=OPENAI_CHANNEL,
        )
        try:
            prepared = await self._text_chat.prepare_kept_by_client(account_id, turn)
        except NotFound:
            raise model_not_found(request.model) from None

        async def run() -> list[Message]:
            return (await self._text_chat.run(prepared)).messages

        call_id = prepared.input.call_id
        return PreparedCompletion(
            id=f"chatcmpl-{call_id}",
            model=request.model,
            conversation_id=call_id,
            turn=prepared.workflow_id,
            include_usage=_include_usage(request),
            run=run,
        )

    async def _model_overrides(
        self, account_id: str, request: ChatCompletionRequest
    ) -> AgentPatch | None:
        """`temperature` and `max_tokens` on top of the agent's model, for this call only."""
        changes: dict[str, Any] = {}
        if request.temperature is not None:
            changes["temperature"] = request.temperature
        if request.output_tokens is not None:
            ceiling = self._settings.max_output_tokens
            if request.output_tokens > ceiling:
                param = "max_completion_tokens" if request.max_completion_tokens else "max_tokens"
                raise InvalidInput(
                    f"{param}: {request.output_tokens} is over the server's ceiling of "
                    f"{ceiling} (PARLEY_MAX_OUTPUT_TOKENS)",
                    {"param": param},
                )
            changes["max_tokens"] = request.output_tokens
        if not changes:
            return None
        agent = await self._agent(account_id, request.model)
        model = agent.spec.model or ModelConfig(
            provider=self._settings.default_llm, name=self._settings.default_model_name
        )
        return AgentPatch(model=ModelConfig.model_validate({**model.model_dump(), **changes}))

    async def _to_session(
        self, account_id: str, request: ChatCompletionRequest, session_id: str
    ) -> PreparedCompletion:
        for name in ("temperature", "max_tokens", "max_completion_tokens", "user", "metadata"):
            if getattr(request, name) is not None:
                raise InvalidInput(
                    f"`{name}` cannot be set with X-Parley-Session-Id: {_FIXED_AT_OPEN}",
                    {"param": name, "code": "unsupported_parameter"},
                )
        content = last_user_text(request.messages)
        try:
            row = await self._chats.check_owned(account_id, session_id)
        except NotFound:
            raise NotFound(
                f"chat session {session_id!r} not found (X-Parley-Session-Id)",
                {"code": "session_not_found"},
            ) from None
        if row.kind == "stateless":
            raise Conflict(
                f"{session_id!r} is a stateless conversation, not a session: leave "
                "X-Parley-Session-Id out to continue it with its messages, or open a session "
                "(POST /api/v1/chats)",
                {"code": "not_a_session"},
            )
        # A squad's session answers to its squad's id, or to the member active right now.
        if request.model not in (row.agent_id, row.squad_id):
            runs = f"squad {row.squad_id!r}" if row.squad_id else f"agent {row.agent_id!r}"
            raise InvalidInput(
                f"session {session_id!r} runs {runs}: send it as the model", {"param": "model"}
            )
        workflow_id = await self._chats.check_send(account_id, session_id, content, None)
        request_id = str(uuid.uuid4())

        async def run() -> list[Message]:
            turn = await self._chats.deliver(
                account_id, session_id, workflow_id, content, None, request_id
            )
            if turn.mode == SessionMode.HUMAN:
                raise Conflict(
                    "the message was recorded, but a human operator holds this session and "
                    f"answers in their own time: read it at GET /api/v1/chats/{session_id}",
                    {"code": "session_held_by_operator"},
                )
            return turn.messages or []

        return PreparedCompletion(
            id=f"chatcmpl-{request_id}",
            model=request.model,
            conversation_id=session_id,
            turn=request_id,
            include_usage=_include_usage(request),
            run=run,
        )

    # ---- models ------------------------------------------------------------------------

    async def models(self, account_id: str) -> list[Model]:
        """Every agent of the account, as OpenAI model objects."""
        agents: list[AgentRecord] = []
        cursor: str | None = None
        while True:
            page, cursor = await self._agents.list(account_id, 100, cursor)
            agents += page
            if cursor is None:
                return [_model_of(agent) for agent in agents]

    async def model(self, account_id: str, agent_id: str) -> Model:
        return _model_of(await self._agent(account_id, agent_id))

    async def _agent(self, account_id: str, agent_id: str) -> AgentRecord:
        try:
            return await self._agents.get(account_id, agent_id)
        except NotFound:
            raise model_not_found(agent_id) from None


def model_not_found(model: str) -> NotFound:
    return NotFound(
        f"The model {model!r} does not exist: a model is the id of one of your Parley agents "
        "(GET /api/v1/openai/models lists them)",
        {"param": "model", "code": "model_not_found"},
    )


def _model_of(agent: AgentRecord) -> Model:
    # `name` is not OpenAI's; model pickers (Open WebUI and others) show it instead of the id.
    return Model.model_validate(
        {
            "id": agent.id,
            "object": "model",
            "created": int(agent.created_time.timestamp()),
            "owned_by": "parley",
            "name": agent.spec.name,
        }
    )


def _include_usage(request: ChatCompletionRequest) -> bool:
    return request.stream_options is not None and request.stream_options.include_usage


def _additional_data(request: ChatCompletionRequest) -> dict[str, Any]:
    """`metadata` and `user` become the conversation's additional_data: recorded with it, and
    template variables of the agent's prompt (`{{user}}`)."""
    data: dict[str, Any] = dict(request.metadata or {})
    if request.user is not None:
        if data.get("user", request.user) != request.user:
            raise InvalidInput("metadata.user and user differ", {"param": "user"})
        data["user"] = request.user
    try:
        return OpenChatRequest._additional_data_shape(data)
    except ValueError as error:
        raise InvalidInput(f"metadata: {error}", {"param": "metadata"}) from None
