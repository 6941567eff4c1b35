"""The OpenAI-compatible face (`/api/v1/openai`), driven by the real `openai` client: an agent
answers as a model would, its tools run server-side, streaming arrives as chunks, a header
sends the last message to a stateful session, and every error is the SDK's typed exception."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest
from openai import AsyncOpenAI
from openai.types.chat import (
    ChatCompletionChunk,
    ChatCompletionMessageParam,
    ChatCompletionMessageToolCallParam,
)
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.common import SearchAttributeKey
from temporalio.testing import WorkflowEnvironment

from src.dev_stack import temporal_cli
from src.services.accounts import new_api_key, register_api_key
from src.temporal.search_attributes import SEARCH_ATTRIBUTES
from tests.conftest import AgentFactory, ApiFactory, SettingsFactory
from tests.fakes.llm_server import FakeLLM
from tests.fakes.tool_server import FakeToolServer
from tests.sessions import open_chat
from tests.test_human_takeover import take_over
from tests.test_quotas import well_inside_a_minute
from tests.test_squads import make_squad

LONG = "tell me about the shipping options for a parcel to Lisbon next week please"
SESSION = "X-Parley-Session-Id"


def client_for(api_url: str, key: str) -> AsyncOpenAI:
    # No retries: each test sees the first answer (the SDK would retry 429s and 5xx).
    return AsyncOpenAI(base_url=f"{api_url}/api/v1/openai", api_key=key, max_retries=0)


@pytest.fixture
async def client(api_url: str, api_key: str) -> AsyncIterator[AsyncOpenAI]:
    async with client_for(api_url, api_key) as sdk:
        yield sdk


@pytest.fixture
async def other_client(api_url: str, other_api_key: str) -> AsyncIterator[AsyncOpenAI]:
    async with client_for(api_url, other_api_key) as sdk:
        yield sdk


def user(text: str) -> ChatCompletionMessageParam:
    return {"role": "user", "content": text}


async def streamed(
    client: AsyncOpenAI, model: str, messages: list[ChatCompletionMessageParam], **extra: Any
) -> list[ChatCompletionChunk]:
    stream = await client.chat.completions.create(
        model=model, messages=messages, stream=True, **extra
    )
    return [chunk async for chunk in stream]


def text_of(chunks: list[ChatCompletionChunk]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


# ---- stateless ------------------------------------------------------------------------------


async def test_an_agent_answers_the_openai_client_with_usage_and_the_call_is_recorded(
    client: AsyncOpenAI, http: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    agent_id = await make_agent("echo")

    completion = await client.chat.completions.create(model=agent_id, messages=[user("hello")])
    recorded = (await http.get(f"/chats/{completion.id.removeprefix('chatcmpl-')}")).json()

    assert completion.object == "chat.completion" and completion.model == agent_id
    [choice] = completion.choices
    assert choice.message.role == "assistant" and choice.message.content == "echo: hello"
    assert choice.finish_reason == "stop" and not choice.message.tool_calls
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (10, 5)
    assert completion.usage.total_tokens == 15
    assert recorded["channel"] == "openai" and recorded["agent_id"] == agent_id
    assert [m["content"] for m in recorded["messages"]] == ["hello", "echo: hello"]


async def test_earlier_turns_and_system_messages_reach_the_model_after_the_agents_prompt(
    client: AsyncOpenAI, make_agent: AgentFactory, fake_llm: tuple[FakeLLM, str]
) -> None:
    agent_id = await make_agent("echo")
    marker = uuid.uuid4().hex[:8]
    messages: list[ChatCompletionMessageParam] = [
        {"role": "system", "content": f"Answer briefly ({marker})."},
        user("first"),
        {"role": "assistant", "content": "echo: first"},
        {"role": "user", "content": [{"type": "text", "text": "second"}]},
    ]

    completion = await client.chat.completions.create(model=agent_id, messages=messages)

    assert completion.choices[0].message.content == "echo: second"
    [sent] = fake_llm[0].requests_for(marker)
    assert [(m["role"], m["content"]) for m in sent["messages"][1:]] == [
        ("system", f"Answer briefly ({marker})."),
        ("user", "first"),
        ("assistant", "echo: first"),
        ("user", "second"),
    ]
    assert sent["messages"][0]["content"].startswith("You help customers of")


async def test_temperature_and_max_tokens_reach_the_agents_model_for_that_call(
    client: AsyncOpenAI, make_agent: AgentFactory, fake_llm: tuple[FakeLLM, str]
) -> None:
    agent_id = await make_agent("echo")
    marker = uuid.uuid4().hex[:8]

    await client.chat.completions.create(
        model=agent_id, messages=[user(f"warm {marker}")], temperature=0.3, max_tokens=50
    )
    await client.chat.completions.create(model=agent_id, messages=[user(f"plain {marker}")])

    warm, plain = fake_llm[0].requests_for(marker)
    assert (warm["temperature"], warm["max_tokens"]) == (0.3, 50)
    assert "temperature" not in plain and "max_tokens" not in plain


async def test_user_and_metadata_are_the_prompts_variables(
    client: AsyncOpenAI, make_agent: AgentFactory, fake_llm: tuple[FakeLLM, str]
) -> None:
    agent_id = await make_agent("echo", system_prompt="Serve {{user}} on the {{plan}} plan.")
    marker = uuid.uuid4().hex[:8]

    await client.chat.completions.create(
        model=agent_id, messages=[user(marker)], user="ana-7", metadata={"plan": "gold"}
    )

    [sent] = fake_llm[0].requests_for(marker)
    assert sent["messages"][0]["content"] == "Serve ana-7 on the gold plan."


async def test_the_agents_webhook_tools_run_server_side(
    client: AsyncOpenAI, make_agent: AgentFactory, tools: tuple[FakeToolServer, str]
) -> None:
    server, base = tools
    order = f"T-{uuid.uuid4().hex[:6]}"
    agent_id = await make_agent(
        model="tool-lookup_order",
        tools=[{"type": "webhook", "name": "lookup_order", "url": f"{base}/echo"}],
    )

    completion = await client.chat.completions.create(
        model=agent_id, messages=[user(f'{{"id": "{order}"}}')]
    )

    message = completion.choices[0].message
    assert message.content == f'tool said: {{"received":{{"id":"{order}"}}}}'
    assert not message.tool_calls  # ran here, not handed to the client
    assert any(call.json() == {"id": order} for call in server.calls_to("/echo"))
    assert completion.usage is not None and completion.usage.total_tokens == 30  # two calls


# ---- streaming ------------------------------------------------------------------------------


async def test_a_streamed_completion_arrives_in_chunks_then_the_usage(
    client: AsyncOpenAI, make_agent: AgentFactory
) -> None:
    agent_id = await make_agent("stream-20")

    chunks = await streamed(client, agent_id, [user(LONG)], stream_options={"include_usage": True})

    assert text_of(chunks) == f"echo: {LONG}"
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) >= 3
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == 15
    assert {(c.id, c.model, c.object) for c in chunks} == {
        (chunks[0].id, agent_id, "chat.completion.chunk")
    }


async def test_a_streamed_tool_turn_spells_the_same_text_as_the_plain_call(
    client: AsyncOpenAI, make_agent: AgentFactory, tools: tuple[FakeToolServer, str]
) -> None:
    agent_id = await make_agent(
        model="tool-lookup_order",
        tools=[{"type": "webhook", "name": "lookup_order", "url": f"{tools[1]}/echo"}],
    )
    ask = [user('{"id": "S-1"}')]

    chunks = await streamed(client, agent_id, ask)
    plain = await client.chat.completions.create(model=agent_id, messages=ask)

    assert text_of(chunks) == plain.choices[0].message.content
    assert text_of(chunks) == 'tool said: {"received":{"id":"S-1"}}'
    assert all(c.usage is None for c in chunks)  # not asked for


async def test_a_turn_that_fails_after_the_stream_began_raises_an_api_error(
    client: AsyncOpenAI, make_agent: AgentFactory
) -> None:
    agent_id = await make_agent("reject")

    with pytest.raises(openai.APIError) as raised:
        await streamed(client, agent_id, [user("hello")])

    assert "does not exist" in raised.value.message
    assert raised.value.type == "server_error" and raised.value.code == "agent_error"


async def test_text_streamed_by_a_model_call_that_is_retried_ends_the_stream_with_an_error(
    client: AsyncOpenAI, make_agent: AgentFactory
) -> None:
    agent_id = await make_agent("cut-1")  # the first streamed answer drops halfway

    with pytest.raises(openai.APIError) as raised:
        await streamed(client, agent_id, [user(LONG)])

    # OpenAI's stream cannot take text back, as the native routes' `discard` does.
    assert raised.value.code == "stream_interrupted" and "send the request again" in str(
        raised.value.message
    )


# ---- stateful sessions ----------------------------------------------------------------------


async def test_with_the_session_header_the_last_user_message_goes_to_that_session(
    client: AsyncOpenAI, http: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    agent_id = await make_agent("echo")
    session = await open_chat(http, agent_id)
    history: list[ChatCompletionMessageParam] = [
        user("not sent again"),
        {"role": "assistant", "content": "whatever the client kept"},
        user("hello session"),
    ]

    completion = await client.chat.completions.create(
        model=agent_id, messages=history, extra_headers={SESSION: session["id"]}
    )
    chunks = await streamed(
        client, agent_id, [user("and streamed")], extra_headers={SESSION: session["id"]}
    )
    stored = (await http.get(f"/chats/{session['id']}")).json()

    assert completion.choices[0].message.content == "echo: hello session"
    assert text_of(chunks) == "echo: and streamed"
    assert [m["content"] for m in stored["messages"] if m["role"] == "user"] == [
        "hello session",
        "and streamed",
    ]


async def test_a_final_session_is_a_conflict_the_sdk_does_not_retry(
    client: AsyncOpenAI, http: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    agent_id = await make_agent("echo")
    session = await open_chat(http, agent_id)
    await http.post(f"/chats/{session['id']}/end", json={})

    with pytest.raises(openai.ConflictError) as raised:
        await client.chat.completions.create(
            model=agent_id, messages=[user("hi")], extra_headers={SESSION: session["id"]}
        )

    assert "final" in raised.value.message
    assert raised.value.response.headers["x-should-retry"] == "false"


async def test_a_session_held_by_an_operator_is_a_conflict_and_keeps_the_message(
    client: AsyncOpenAI, http: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    agent_id = await make_agent("echo")
    session = await open_chat(http, agent_id)
    await take_over(http, session["id"])

    with pytest.raises(openai.ConflictError) as raised:
        await client.chat.completions.create(
            model=agent_id, messages=[user("anyone there?")], extra_headers={SESSION: session["id"]}
        )
    stored = (await http.get(f"/chats/{session['id']}")).json()

    assert raised.value.code == "session_held_by_operator"
    assert "anyone there?" in [m["content"] for m in stored["messages"]]


async def test_a_squads_session_answers_to_the_squads_id_across_a_handoff(
    client: AsyncOpenAI, http: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    squad_id, triage, billing = await make_squad(http, make_agent)
    session = await open_chat(http, None, squad_id=squad_id)
    to_session = {SESSION: session["id"]}

    handed = await client.chat.completions.create(
        model=squad_id, messages=[user('{"reason": "a refund"}')], extra_headers=to_session
    )
    later = await client.chat.completions.create(
        model=squad_id, messages=[user("and my invoice?")], extra_headers=to_session
    )
    stored = (await http.get(f"/chats/{session['id']}")).json()

    assert handed.choices[0].message.content and later.choices[0].message.content
    assert handed.model == later.model == squad_id
    assert stored["agent_id"] == billing != triage
    assert stored["messages"][-1]["author"]["agent_id"] == billing


async def test_a_stateless_conversation_is_not_a_session_for_the_header(
    client: AsyncOpenAI, make_agent: AgentFactory
) -> None:
    agent_id = await make_agent("echo")
    first = await client.chat.completions.create(model=agent_id, messages=[user("hi")])

    with pytest.raises(openai.ConflictError) as raised:
        await client.chat.completions.create(
            model=agent_id,
            messages=[user("again")],
            extra_headers={SESSION: first.id.removeprefix("chatcmpl-")},
        )

    assert raised.value.code == "not_a_session" and "leave" in raised.value.message


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"temperature": 0.5}, "temperature"),
        ({"user": "ana"}, "user"),
        ({"model": "agent-someone-else"}, "model"),
        ({"messages": [{"role": "system", "content": "be brief"}, user("hi")]}, "messages[0].role"),
        ({"messages": [user("hi"), {"role": "assistant", "content": "x"}]}, "messages[1].role"),
    ],
)
async def test_what_a_session_cannot_take_is_a_bad_request_naming_it(
    client: AsyncOpenAI,
    http: httpx.AsyncClient,
    make_agent: AgentFactory,
    fields: dict[str, Any],
    param: str,
) -> None:
    agent_id = await make_agent("echo")
    session = await open_chat(http, agent_id)
    request: dict[str, Any] = {"model": agent_id, "messages": [user("hi")], **fields}

    with pytest.raises(openai.BadRequestError) as raised:
        await client.chat.completions.create(**request, extra_headers={SESSION: session["id"]})

    assert raised.value.param == param


# ---- models ---------------------------------------------------------------------------------


async def test_the_models_are_the_accounts_agents(
    client: AsyncOpenAI, other_client: AsyncOpenAI, make_agent: AgentFactory
) -> None:
    agent_id = await make_agent("echo", name="Front desk")

    listed = [model async for model in client.models.list()]
    one = await client.models.retrieve(agent_id)
    others = [model.id async for model in other_client.models.list()]

    [mine] = [model for model in listed if model.id == agent_id]
    assert (mine.object, mine.owned_by) == ("model", "parley") and mine.created > 0
    assert one.id == agent_id and one.model_extra == {"name": "Front desk"}
    assert agent_id not in others


# ---- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"n": 2}, "n"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"stop": ["\n"]}, "stop"),
        ({"top_p": 0.5}, "top_p"),
        ({"store": False}, "store"),
        ({"extra_body": {"bogus": 1}}, "bogus"),
        ({"temperature": 3}, "temperature"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "assistant", "content": "hi"}]}, "messages"),
        ({"messages": [{"role": "function", "name": "f", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": "hi", "name": "ana"}]}, "messages[0].name"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
            "messages[0].content[0]",
        ),
        (
            {
                "messages": [
                    user("hi"),
                    {"role": "tool", "tool_call_id": "call_1", "content": "42"},
                    user("and?"),
                ]
            },
            "messages[1].tool_call_id",
        ),
    ],
)
async def test_what_parley_cannot_honour_is_a_bad_request_naming_the_parameter(
    client: AsyncOpenAI, make_agent: AgentFactory, fields: dict[str, Any], param: str
) -> None:
    request: dict[str, Any] = {"model": await make_agent("echo"), "messages": [user("hi")]}

    with pytest.raises(openai.BadRequestError) as raised:
        await client.chat.completions.create(**{**request, **fields})

    assert raised.value.param == param, raised.value.message
    assert raised.value.type == "invalid_request_error" and raised.value.message


async def test_neutral_values_of_unsupported_parameters_are_accepted(
    client: AsyncOpenAI, make_agent: AgentFactory
) -> None:
    completion = await client.chat.completions.create(
        model=await make_agent("echo"),
        messages=[user("hi")],
        n=1,
        top_p=1,
        presence_penalty=0,
        frequency_penalty=0,
        response_format={"type": "text"},
        logprobs=False,
    )

    assert completion.choices[0].message.content == "echo: hi"


async def test_earlier_tool_calls_of_the_client_fold_into_the_transcript(
    client: AsyncOpenAI, make_agent: AgentFactory, fake_llm: tuple[FakeLLM, str]
) -> None:
    marker = uuid.uuid4().hex[:8]
    call: ChatCompletionMessageToolCallParam = {
        "id": "call_w",
        "type": "function",
        "function": {"name": "weather", "arguments": "{}"},
    }

    await client.chat.completions.create(
        model=await make_agent("echo"),
        messages=[
            user("weather?"),
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_w", "content": f"sunny {marker}"},
            {"role": "assistant", "content": "It is sunny."},
            user("thanks"),
        ],
    )

    [sent] = fake_llm[0].requests_for(marker)
    assert [m["role"] for m in sent["messages"]] == [
        "system", "user", "assistant", "tool", "assistant", "user",
    ]  # fmt: skip
    tool = {"role": "tool", "tool_call_id": "call_w", "content": f"sunny {marker}"}
    assert sent["messages"][3] == tool


async def test_errors_are_the_sdks_typed_exceptions_in_openais_shape(
    client: AsyncOpenAI, api_url: str, make_agent: AgentFactory
) -> None:
    async with client_for(api_url, "pk_not-a-key") as stranger:
        with pytest.raises(openai.AuthenticationError) as unauthorized:
            await stranger.chat.completions.create(model="x", messages=[user("hi")])
    with pytest.raises(openai.NotFoundError) as no_agent:
        await client.chat.completions.create(model="agent-nope", messages=[user("hi")])
    with pytest.raises(openai.NotFoundError) as no_session:
        await client.chat.completions.create(
            model=await make_agent("echo"), messages=[user("hi")], extra_headers={SESSION: "nope"}
        )
    with pytest.raises(openai.NotFoundError) as no_model:
        await client.models.retrieve("agent-nope")
    with pytest.raises(openai.NotFoundError) as no_route:
        await client.embeddings.create(model="x", input="hi")
    refusing = await make_agent("reject")
    with pytest.raises(openai.InternalServerError) as refused:
        await client.chat.completions.create(model=refusing, messages=[user("hi")])

    assert unauthorized.value.code == "invalid_api_key"
    assert (no_agent.value.code, no_agent.value.param) == ("model_not_found", "model")
    assert no_session.value.code == "session_not_found"
    assert no_model.value.code == "model_not_found"
    assert "Invalid URL (POST /api/v1/openai/embeddings)" in no_route.value.message
    assert refused.value.status_code == 502 and refused.value.code == "agent_error"
    for error in (unauthorized, no_agent, no_session, refused):
        assert set(error.value.response.json()["error"]) == {"message", "type", "param", "code"}


async def test_another_accounts_agent_and_session_are_not_found(
    client: AsyncOpenAI,
    other_client: AsyncOpenAI,
    http: httpx.AsyncClient,
    make_agent: AgentFactory,
) -> None:
    agent_id = await make_agent("echo")
    session = await open_chat(http, agent_id)

    with pytest.raises(openai.NotFoundError) as agent:
        await other_client.chat.completions.create(model=agent_id, messages=[user("hi")])
    with pytest.raises(openai.NotFoundError) as model:
        await other_client.models.retrieve(agent_id)
    with pytest.raises(openai.NotFoundError) as foreign_session:
        await other_client.chat.completions.create(
            model=agent_id, messages=[user("hi")], extra_headers={SESSION: session["id"]}
        )

    assert agent.value.code == model.value.code == "model_not_found"
    assert foreign_session.value.code == "session_not_found"


async def test_a_key_over_its_rate_gets_the_sdks_rate_limit_error(
    make_settings: SettingsFactory, serve_api: ApiFactory, db: async_sessionmaker[AsyncSession]
) -> None:
    key = new_api_key()
    await register_api_key(db, key, account_id=f"openai-rate-{uuid.uuid4().hex[:8]}")
    async with serve_api(make_settings(PARLEY_RATE_LIMIT_PER_MINUTE=1)) as url:
        async with client_for(url, key) as sdk:
            await well_inside_a_minute()
            await sdk.models.list()
            with pytest.raises(openai.RateLimitError) as limited:
                await sdk.models.list()

    assert limited.value.code == "rate_limit_exceeded"
    assert int(limited.value.response.headers["Retry-After"]) >= 1


async def test_the_native_routes_keep_their_own_error_shape(http: httpx.AsyncClient) -> None:
    response = await http.get("/chats/nope")

    assert response.status_code == 404
    assert set(response.json()["error"]) == {"code", "message", "details"}


async def test_with_temporal_unreachable_a_completion_is_a_503_the_log_explains(
    make_settings: SettingsFactory,
    serve_api: ApiFactory,
    api_key: str,
    make_agent: AgentFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    agent_id = await make_agent()
    elsewhere = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_cli(),
        search_attributes=[SearchAttributeKey.for_keyword(name) for name in SEARCH_ATTRIBUTES],
    )
    target = elsewhere.client.service_client.config.target_host
    async with serve_api(make_settings(TEMPORAL_ADDRESS=target)) as url:
        async with client_for(url, api_key) as sdk:
            await elsewhere.shutdown()
            with pytest.raises(openai.InternalServerError) as failed:
                await sdk.chat.completions.create(model=agent_id, messages=[user("anyone?")])

    assert failed.value.status_code == 503
    assert any(
        "/openai/chat/completions answered 503" in record.getMessage() for record in caplog.records
    ), [record.getMessage() for record in caplog.records]
