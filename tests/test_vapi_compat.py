"""The Vapi face: a client that speaks Vapi (its routes, its camelCase fields, its error
shape) runs its sessions and chats against Parley by changing base URL and key. Every answer
is checked against the schemas of Vapi's published OpenAPI document."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from httpx_sse import aconnect_sse
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from src.services.accounts import new_api_key, register_api_key
from tests.conftest import AgentFactory, ApiFactory, SettingsFactory
from tests.fakes.llm_server import FakeLLM
from tests.fakes.tool_server import FakeToolServer
from tests.vapi import assert_vapi, assert_vapi_error

THIRTY_DAYS = 2_592_000


def vapi_client(api_url: str, key: str | None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.AsyncClient(base_url=f"{api_url}/compat/vapi", headers=headers, timeout=60)


@pytest.fixture(scope="module")
async def vapi(api_url: str, api_key: str) -> AsyncIterator[httpx.AsyncClient]:
    async with vapi_client(api_url, api_key) as client:
        yield client


@pytest.fixture(scope="module")
async def other_vapi(api_url: str, other_api_key: str) -> AsyncIterator[httpx.AsyncClient]:
    async with vapi_client(api_url, other_api_key) as client:
        yield client


async def create_session(vapi: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await vapi.post("/session", json=body)
    assert response.status_code == 201, response.text
    return dict(assert_vapi("Session", response.json()))


async def chat(vapi: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await vapi.post("/chat", json=body)
    assert response.status_code == 200, response.text
    return dict(assert_vapi("Chat", response.json()))


async def stream(vapi: httpx.AsyncClient, path: str, body: dict[str, Any]) -> list[Any]:
    """The events of a streamed answer, as (event name, data)."""
    async with aconnect_sse(vapi, "POST", path, json=body) as source:
        assert source.response.status_code == 200, await source.response.aread()
        return [(sse.event, json.loads(sse.data)) async for sse in source.aiter_sse()]


def texts(messages: list[dict[str, Any]]) -> list[str]:
    return [m.get("content") or "" for m in messages]


# ---- sessions ----------------------------------------------------------------------------


async def test_a_session_is_created_chatted_in_listed_and_completed(
    vapi: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    agent_id = await make_agent(model="echo")
    session = await create_session(
        vapi,
        assistantId=agent_id,
        name="support chat",
        expirationSeconds=THIRTY_DAYS,
        assistantOverrides={"variableValues": {"company": "Acme"}},
    )
    assert session["status"] == "active"
    assert session["expirationSeconds"] == THIRTY_DAYS
    assert session["assistantId"] == agent_id
    assert session["name"] == "support chat"

    answer = await chat(vapi, sessionId=session["id"], input="hello there")
    assert answer["sessionId"] == session["id"]
    assert texts(answer["output"]) == ["echo: hello there"]
    assert texts(answer["messages"])[-1] == "hello there"
    assert answer["assistantId"] == agent_id

    read = assert_vapi("Session", (await vapi.get(f"/session/{session['id']}")).json())
    assert texts(read["messages"]) == ["hello there", "echo: hello there"]
    listed = (await vapi.get("/session", params={"assistantId": agent_id})).json()
    assert_vapi("SessionPaginatedResponse", listed)
    assert [s["id"] for s in listed["results"]] == [session["id"]]
    assert listed["metadata"]["totalItems"] == 1

    done = (await vapi.patch(f"/session/{session['id']}", json={"status": "completed"})).json()
    assert_vapi("Session", done)
    assert done["status"] == "completed"
    assert done["name"] == "support chat"
    assert "echo: hello there" in done["artifact"]["transcript"]
    assert isinstance(done["cost"], float | int)


async def test_a_completed_sessions_artifact_holds_what_analysis_extracted(
    vapi: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    analysis = {
        "summary_prompt": "Summarise the conversation.",
        "structured_outputs": [
            {
                "name": "outcome",
                "schema": {
                    "type": "object",
                    "properties": {"resolved": {"type": "boolean"}},
                    "required": ["resolved"],
                },
            }
        ],
    }
    session = await create_session(vapi, assistantId=await make_agent(analysis=analysis))
    await chat(vapi, sessionId=session["id"], input="thanks, solved")
    await vapi.patch(f"/session/{session['id']}", json={"status": "completed"})

    read = await analysed(vapi, session["id"])

    outputs = read["artifact"]["structuredOutputs"]
    assert outputs["outcome"]["name"] == "outcome"
    assert isinstance(outputs["outcome"]["result"]["resolved"], bool)
    assert "analysis" in [cost["type"] for cost in read["costs"]]


async def analysed(vapi: httpx.AsyncClient, session_id: str) -> dict[str, Any]:
    """The session once its analysis has run (bounded polling, not a timing assertion)."""
    for _ in range(300):
        read = assert_vapi("Session", (await vapi.get(f"/session/{session_id}")).json())
        if read.get("artifact", {}).get("structuredOutputs"):
            return dict(read)
        await asyncio.sleep(0.1)
    raise AssertionError(f"session {session_id} was not analysed")


async def test_a_session_is_renamed_and_deleted(
    vapi: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    session = await create_session(vapi, assistantId=await make_agent())

    renamed = await vapi.patch(f"/session/{session['id']}", json={"name": "renamed"})
    assert assert_vapi("Session", renamed.json())["name"] == "renamed"
    deleted = await vapi.delete(f"/session/{session['id']}")
    assert assert_vapi("Session", deleted.json())["status"] == "completed"

    assert_vapi_error(await vapi.get(f"/session/{session['id']}"), 404)
    listed = (await vapi.get("/session")).json()
    assert session["id"] not in [s["id"] for s in listed["results"]]


async def test_expiration_allows_vapis_30_days_and_native_sessions_keep_their_bound(
    vapi: httpx.AsyncClient, http: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    agent_id = await make_agent()

    too_long = await vapi.post(
        "/session", json={"assistantId": agent_id, "expirationSeconds": THIRTY_DAYS + 1}
    )
    native = await http.post(
        "/chats", json={"agent_id": agent_id, "channel": "web", "ttl_seconds": THIRTY_DAYS}
    )

    assert_vapi_error(too_long, 400, "expirationSeconds")
    assert native.status_code == 422, native.text
    assert "between 1 and 86400" in native.json()["error"]["message"]


async def test_a_session_runs_a_squad(
    vapi: httpx.AsyncClient, http: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    member = await make_agent()
    squad = await http.post(
        "/squads", json={"name": "desk", "members": [{"name": "front", "agent_id": member}]}
    )
    assert squad.status_code == 201, squad.text

    session = await create_session(vapi, squadId=squad.json()["id"])
    answer = await chat(vapi, sessionId=session["id"], input="hi squad")
    first = await chat(vapi, squadId=squad.json()["id"], input="no session")
    second = await chat(vapi, previousChatId=first["id"], input="still none")

    assert session["squadId"] == squad.json()["id"]
    assert "assistantId" not in session
    assert answer["squadId"] == squad.json()["id"]
    assert texts(answer["output"]) == ["echo: hi squad"]
    assert second["squadId"] == squad.json()["id"]
    assert texts(second["messages"]) == ["no session", "echo: no session", "still none"]


async def test_an_inline_assistant_is_mapped_onto_an_agent(
    vapi: httpx.AsyncClient, fake_llm: tuple[FakeLLM, str], tools: tuple[FakeToolServer, str]
) -> None:
    marker = f"You are Zed {uuid.uuid4().hex[:8]}."
    assistant = {
        "name": "Zed",
        "firstMessage": "Hi, I am Zed.",
        "model": {
            "provider": "openai",
            "model": "tool-lookup",
            "messages": [{"role": "system", "content": marker}],
            "tools": [
                {
                    "type": "function",
                    "function": {
                        "name": "lookup",
                        "description": "Finds an order",
                        "parameters": {
                            "type": "object",
                            "properties": {"order": {"type": "string"}},
                        },
                    },
                    "server": {"url": f"{tools[1]}/vapi"},
                },
                {"type": "endCall"},
            ],
        },
    }
    session = await create_session(vapi, assistant=assistant)

    answer = await chat(vapi, sessionId=session["id"], input='{"order": "42"}')

    assert texts(session["messages"]) == ["Hi, I am Zed."]
    roles = [m["role"] for m in answer["output"]]
    assert roles == ["assistant", "tool", "assistant"]
    assert answer["output"][0]["tool_calls"][0]["function"]["name"] == "lookup"
    assert json.loads(answer["output"][1]["content"]) == {
        "asked": {"order": "42"},
        "status": "shipped",
    }
    [sent] = [c for c in tools[0].calls_to("/vapi") if "42" in c.body.decode()]
    message = sent.json()["message"]
    assert message["type"] == "tool-calls" and message["chat"]["id"] == session["id"]
    assert message["toolCallList"][0]["function"]["name"] == "lookup"
    assert message["toolWithToolCallList"][0]["server"]["url"].endswith("/vapi")
    assert answer["output"][2]["content"].startswith("tool said:")
    system = fake_llm[0].requests_for(marker)[0]["messages"][0]
    assert system == {"role": "system", "content": marker}


@pytest.mark.parametrize(
    ("body", "mentions"),
    [
        ({"customer": {"number": "+15550100"}}, "`customer`"),
        ({"assistantOverrides": {"firstMessage": "Yo"}}, "`assistantOverrides.firstMessage`"),
        ({"squad": {"members": [{"assistantId": "a"}]}}, "`squad`"),
    ],
)
async def test_unmapped_session_fields_are_refused_by_name(
    vapi: httpx.AsyncClient, make_agent: AgentFactory, body: dict[str, Any], mentions: str
) -> None:
    response = await vapi.post("/session", json={"assistantId": await make_agent(), **body})

    assert_vapi_error(response, 422, mentions)


@pytest.mark.parametrize(
    ("assistant", "mentions"),
    [
        ({"voice": {"provider": "vapi", "voiceId": "Elliot"}}, "`assistant.voice`"),
        ({"model": {"provider": "anthropic", "model": "claude"}}, "provider 'anthropic'"),
        (
            {"model": {"provider": "openai", "model": "echo", "tools": [{"type": "dtmf"}]}},
            "tool type 'dtmf'",
        ),
        (
            {
                "model": {
                    "provider": "openai",
                    "model": "echo",
                    "tools": [{"type": "function", "function": {"name": "f"}}],
                }
            },
            "server.url",
        ),
        (
            {
                "model": {
                    "provider": "openai",
                    "model": "echo",
                    "messages": [{"role": "assistant", "content": "hi"}],
                }
            },
            "only system messages",
        ),
    ],
)
async def test_unmapped_assistant_fields_are_refused_by_name(
    vapi: httpx.AsyncClient, assistant: dict[str, Any], mentions: str
) -> None:
    response = await vapi.post("/chat", json={"assistant": assistant, "input": "hi"})

    assert_vapi_error(response, 422, mentions)


async def test_refusals_have_vapis_error_shape(
    api_url: str, vapi: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    async with vapi_client(api_url, None) as anonymous:
        assert_vapi_error(await anonymous.get("/session"), 401)
    async with vapi_client(api_url, "sk-not-a-key") as wrong:
        assert_vapi_error(await wrong.post("/chat", json={"input": "hi"}), 401)
    assert_vapi_error(await vapi.post("/chat", json={"assistantId": "x"}), 400, "input")
    assert_vapi_error(await vapi.get(f"/session/{uuid.uuid4()}"), 404)
    assert_vapi_error(await vapi.get(f"/chat/{uuid.uuid4()}"), 404)
    assert_vapi_error(await vapi.get("/chat", params={"sortOrder": "ASC"}), 422, "`sortOrder`")
    assert_vapi_error(await vapi.get("/assistant"), 404, "no route /assistant")
    form = await vapi.post("/chat", content=b"input=hi", headers={"Content-Type": "text/plain"})
    assert_vapi_error(form, 415, "JSON")
    huge = await vapi.post("/chat", json={"input": "x" * 3_000_000})
    assert_vapi_error(huge, 413, "PARLEY_MAX_REQUEST_BYTES")
    assert_vapi_error(await vapi.post("/session", json={"name": "a\x00"}), 400, "NUL")
    assert_vapi_error(await vapi.get("/chat", params={"squadId": "a\x00"}), 400, "NUL")
    agent_id = await make_agent()
    both = {"assistantId": agent_id, "sessionId": "s", "previousChatId": "c", "input": "hi"}
    assert_vapi_error(await vapi.post("/chat", json=both), 400, "mutually exclusive")


async def test_the_key_rate_limit_holds_on_the_vapi_face_too(
    make_settings: SettingsFactory,
    serve_api: ApiFactory,
    db: async_sessionmaker[AsyncSession],
) -> None:
    key = new_api_key()
    await register_api_key(db, key, account_id=f"vapi-rate-{uuid.uuid4().hex[:8]}")
    async with (
        serve_api(make_settings(PARLEY_RATE_LIMIT_PER_MINUTE=2)) as url,
        vapi_client(url, key) as limited,
    ):
        statuses = [(await limited.get("/session")).status_code for _ in range(3)]
        refused = await limited.get("/chat")

    assert statuses[:2] == [200, 200]
    assert_vapi_error(refused, 429, "requests a minute")
    assert int(refused.headers["retry-after"]) >= 1


# ---- chats -------------------------------------------------------------------------------


async def test_chats_chain_by_previous_chat_id_and_are_listed_read_and_deleted(
    vapi: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    agent_id = await make_agent()
    first = await chat(vapi, assistantId=agent_id, input="one", name="first")
    second = await chat(
        vapi,
        assistantId=agent_id,
        previousChatId=first["id"],
        input=[{"role": "user", "content": "two"}],
    )

    assert "sessionId" not in first
    assert texts(first["output"]) == ["echo: one"]
    assert second["previousChatId"] == first["id"]
    assert texts(second["messages"]) == ["one", "echo: one", "two"]
    assert texts(second["output"]) == ["echo: two"]
    listed = (await vapi.get("/chat", params={"assistantId": agent_id})).json()
    assert_vapi("ChatPaginatedResponse", listed)
    assert [c["id"] for c in listed["results"]] == [second["id"], first["id"]]
    read = assert_vapi("Chat", (await vapi.get(f"/chat/{first['id']}")).json())
    assert read["name"] == "first"
    branch = await vapi.post("/chat", json={"previousChatId": first["id"], "input": "three"})
    assert_vapi_error(branch, 422, "latest")
    deleted = await vapi.delete(f"/chat/{second['id']}")
    assert assert_vapi("Chat", deleted.json())["id"] == second["id"]
    assert_vapi_error(await vapi.get(f"/chat/{second['id']}"), 404)


async def test_a_chat_input_may_only_hold_user_messages(
    vapi: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    history = [
        {"role": "assistant", "content": "earlier"},
        {"role": "user", "content": "now"},
    ]
    response = await vapi.post("/chat", json={"assistantId": await make_agent(), "input": history})

    assert_vapi_error(response, 422, "input[0]")


async def test_a_streamed_chat_sends_vapis_deltas(
    vapi: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    session = await create_session(vapi, assistantId=await make_agent(model="stream-5"))

    events = await stream(
        vapi, "/chat", {"sessionId": session["id"], "input": "stream these words", "stream": True}
    )

    deltas = [data for _, data in events]
    for delta in deltas:
        assert_vapi("CreateChatStreamResponse", delta)
    assert {d["path"] for d in deltas} == {"chat.output[0].content"}
    assert {d["sessionId"] for d in deltas} == {session["id"]}
    assert "".join(d["delta"] for d in deltas) == "echo: stream these words"
    recorded = assert_vapi("Chat", (await vapi.get(f"/chat/{deltas[0]['id']}")).json())
    assert texts(recorded["output"]) == ["echo: stream these words"]


async def test_a_streamed_reply_after_a_tool_call_names_its_place_in_the_output(
    vapi: httpx.AsyncClient, tools: tuple[FakeToolServer, str]
) -> None:
    lookup = {
        "type": "function",
        "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}},
        "server": {"url": f"{tools[1]}/echo"},
    }
    assistant = {"model": {"provider": "openai", "model": "tool-lookup", "tools": [lookup]}}
    session = await create_session(vapi, assistant=assistant)

    events = await stream(
        vapi, "/chat", {"sessionId": session["id"], "input": '{"a": 1}', "stream": True}
    )

    deltas = [assert_vapi("CreateChatStreamResponse", data) for _, data in events]
    # output: the assistant's tool call, the tool's result, then the streamed reply
    assert {d["path"] for d in deltas} == {"chat.output[2].content"}
    recorded = (await vapi.get(f"/chat/{deltas[0]['id']}")).json()
    assert recorded["output"][2]["content"] == "".join(d["delta"] for d in deltas)


async def test_a_chat_is_recorded_when_its_streaming_client_leaves(
    vapi: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    session = await create_session(vapi, assistantId=await make_agent(model="stream-50"))
    body = {"sessionId": session["id"], "input": "one two three four five six", "stream": True}

    async with aconnect_sse(vapi, "POST", "/chat", json=body) as source:
        first = json.loads((await anext(source.aiter_sse())).data)

    recorded = await recorded_chat(vapi, first["id"])
    assert texts(recorded["output"]) == ["echo: one two three four five six"]


async def recorded_chat(vapi: httpx.AsyncClient, chat_id: str) -> dict[str, Any]:
    """The chat once it is recorded (bounded polling, not a timing assertion)."""
    for _ in range(300):
        response = await vapi.get(f"/chat/{chat_id}")
        if response.status_code == 200:
            return dict(assert_vapi("Chat", response.json()))
        await asyncio.sleep(0.1)
    raise AssertionError(f"chat {chat_id} was not recorded")


async def test_a_streamed_chat_whose_turn_fails_ends_with_an_error_event(
    vapi: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    session = await create_session(vapi, assistantId=await make_agent(model="reject"))

    events = await stream(
        vapi, "/chat", {"sessionId": session["id"], "input": "hello", "stream": True}
    )

    assert [name for name, _ in events] == ["error"]
    assert set(events[0][1]) == {"message", "error", "statusCode"}
    assert events[0][1]["statusCode"] == 502


async def test_chat_responses_answer_in_the_openai_responses_shape(
    vapi: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    agent_id = await make_agent(model="stream-5")

    plain = await vapi.post(
        "/chat/responses", json={"assistantId": agent_id, "input": "plain", "stream": False}
    )
    events = await stream(vapi, "/chat/responses", {"assistantId": agent_id, "input": "a b c"})

    assert plain.status_code == 200, plain.text
    response = assert_vapi("ResponseObject", plain.json())
    assert response["output"][0]["content"][0]["text"] == "echo: plain"
    schemas = {
        "response.output_text.delta": "ResponseTextDeltaEvent",
        "response.output_text.done": "ResponseTextDoneEvent",
        "response.completed": "ResponseCompletedEvent",
    }
    for name, data in events:
        assert data["type"] == name
        assert_vapi(schemas[name], data)
    deltas = "".join(d["delta"] for n, d in events if n == "response.output_text.delta")
    assert deltas == "echo: a b c"
    assert [n for n, _ in events][-2:] == ["response.output_text.done", "response.completed"]
    completed = events[-1][1]["response"]
    assert completed["output"][0]["content"][0]["text"] == "echo: a b c"


# ---- tenants -----------------------------------------------------------------------------


async def test_another_accounts_sessions_and_chats_are_not_found(
    vapi: httpx.AsyncClient, other_vapi: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    session = await create_session(vapi, assistantId=await make_agent())
    mine = await chat(vapi, sessionId=session["id"], input="private")
    sid, cid = session["id"], mine["id"]

    assert_vapi_error(await other_vapi.get(f"/session/{sid}"), 404)
    assert_vapi_error(await other_vapi.patch(f"/session/{sid}", json={"name": "x"}), 404)
    assert_vapi_error(await other_vapi.delete(f"/session/{sid}"), 404)
    assert_vapi_error(await other_vapi.post("/chat", json={"sessionId": sid, "input": "x"}), 404)
    assert_vapi_error(
        await other_vapi.post("/chat", json={"previousChatId": cid, "input": "x"}), 404
    )
    assert_vapi_error(
        await other_vapi.post("/chat/responses", json={"sessionId": sid, "input": "x"}), 404
    )
    assert_vapi_error(await other_vapi.get(f"/chat/{cid}"), 404)
    assert_vapi_error(await other_vapi.delete(f"/chat/{cid}"), 404)
    sessions = (await other_vapi.get("/session")).json()["results"]
    chats = (await other_vapi.get("/chat", params={"sessionId": sid})).json()["results"]
    assert sid not in [s["id"] for s in sessions]
    assert chats == []
    assert (await vapi.get(f"/session/{sid}")).json()["status"] == "active"
