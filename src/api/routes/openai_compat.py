"""`/api/v1/openai`: the OpenAI-compatible face, so that `OpenAI(base_url=".../api/v1/openai",
api_key=<Parley key>)` talks to an agent (`model` = agent id). Errors in OpenAI's shape."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.responses import JSONResponse
from openai.types import Model
from openai.types.chat import ChatCompletion

from src.api.deps import AccountId, ServicesDep
from src.api.event_streams import EVENT_STREAM, event_source
from src.api.front_door import KEYED_PREFIX
from src.api.openai_errors import OPENAI_PREFIX, OpenAIRoute
from src.compat.openai_answers import completion_chunks, completion_of
from src.compat.openai_chat import OpenAIChat
from src.compat.openai_requests import ChatCompletionRequest
from src.errors import NotFound

_OPENAI_ERROR: dict[str, Any] = {
    "description": 'OpenAI\'s error shape: `{"error": {"message", "type", "param", "code"}}`',
    "content": {
        "application/json": {
            "example": {
                "error": {
                    "message": "`n` is not supported: one choice per request: n must be 1",
                    "type": "invalid_request_error",
                    "param": "n",
                    "code": "unsupported_parameter",
                }
            }
        }
    },
}

_ERRORS: dict[int | str, dict[str, Any]] = {
    status: _OPENAI_ERROR for status in (400, 401, 404, 409, 413, 415, 429, 502, 503)
}

router = APIRouter(
    prefix=OPENAI_PREFIX.removeprefix(KEYED_PREFIX),
    tags=["openai"],
    route_class=OpenAIRoute,
    responses=_ERRORS,
)


async def openai_chat(services: ServicesDep) -> OpenAIChat:
    return OpenAIChat(services.settings, services.text_chat, services.chats, services.agents)


OpenAIChatDep = Annotated[OpenAIChat, Depends(openai_chat)]


@router.post(
    "/chat/completions",
    response_model=ChatCompletion,
    responses={
        200: {
            "content": {EVENT_STREAM: {}},
            "description": 'With `"stream": true`: `chat.completion.chunk`s, then `data: [DONE]`.',
        }
    },
)
async def create_chat_completion(
    body: ChatCompletionRequest,
    account: AccountId,
    chat: OpenAIChatDep,
    services: ServicesDep,
    session_id: Annotated[
        str | None, Header(alias="X-Parley-Session-Id", min_length=1, max_length=64)
    ] = None,
) -> Response:
    """`model` is an agent id. Without X-Parley-Session-Id, `messages` is the whole
    conversation (a stateless turn, recorded as a conversation of its own); with it, the last
    (user) message goes to that stateful session. The agent's tools run server-side."""
    prepared = await chat.prepare(account, body, session_id)
    if not body.stream:
        messages = await prepared.run()
        return JSONResponse(
            completion_of(prepared, messages).model_dump(mode="json", exclude_unset=True)
        )
    after = await services.streams.head(prepared.conversation_id)
    return event_source(completion_chunks(services.streams, prepared, after))


@router.get("/models")
async def list_models(account: AccountId, chat: OpenAIChatDep) -> dict[str, Any]:
    """The account's agents as OpenAI model objects (`name` added: the agent's name)."""
    models = await chat.models(account)
    return {
        "object": "list",
        "data": [m.model_dump(mode="json", exclude_unset=True) for m in models],
    }


@router.get("/models/{model_id}", response_model=Model)
async def retrieve_model(model_id: str, account: AccountId, chat: OpenAIChatDep) -> Response:
    return JSONResponse(
        (await chat.model(account, model_id)).model_dump(mode="json", exclude_unset=True)
    )


@router.api_route(
    "/{path:path}",
    methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
    include_in_schema=False,
)
async def unknown_route(path: str, request: Request, account: AccountId) -> Response:
    """The rest of OpenAI's API is not here; answered as OpenAI answers an unknown URL."""
    raise NotFound(
        f"Invalid URL ({request.method} {request.url.path}): this OpenAI-compatible face has "
        "POST /chat/completions, GET /models and GET /models/{id}",
        {"code": "unknown_url"},
    )
