"""A session's budget: once its LLM cost reaches `budget_usd` (the agent's, or the server's
PARLEY_SESSION_BUDGET_USD), the next message is answered with the agent's budget message
instead of a model call, and the session ends with final_reason `budget`.

The fake LLM reports 10 prompt and 5 completion tokens per call; agents here use the model
`gpt-4o-mini` (echo behaviour, priced at $0.15 / $0.60 per million tokens), so one call costs
exactly $0.0000045."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import httpx
import pytest
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.testing import ActivityEnvironment

from src.activities.llm import LLMActivities, SessionTurnRequest
from src.config import Settings
from src.db.snapshots import SnapshotStore
from src.domain import (
    DEFAULT_BUDGET_MESSAGE,
    AgentSnapshot,
    AgentSpec,
    BuiltinTool,
    Message,
    ModelConfig,
    ToolCall,
    Usage,
)
from src.llm.providers import ModelProviders
from src.sealing.secret_box import SecretBox
from tests.conftest import AgentFactory, ApiFactory, SettingsFactory, api_client
from tests.fakes.llm_server import FakeLLM
from tests.fakes.webhook_receiver import WebhookReceiver
from tests.sessions import open_chat, say
from tests.test_api_errors import assert_error
from tests.test_finish_pipeline import accepted_deliveries, finishing_agent
from tests.test_text_chat import turn, user

PRICED_MODEL = "gpt-4o-mini"
ONE_CALL_USD = 0.0000045
# Less than one call: the first turn is answered, every later one finds the budget used up.
TINY_BUDGET = 0.000001
BUDGET_MESSAGE = "We have reached this chat's limit; a colleague will follow up by email."


async def test_a_session_past_its_budget_gets_the_budget_message_and_ends(
    http: httpx.AsyncClient,
    make_agent: AgentFactory,
    fake_llm: tuple[FakeLLM, str],
    receiver: tuple[WebhookReceiver, str],
    temporal_client: Client,
) -> None:
    hooks, url = receiver
    agent_id = await finishing_agent(
        make_agent,
        url,
        model=PRICED_MODEL,
        budget_usd=TINY_BUDGET,
        budget_message=BUDGET_MESSAGE,
    )
    marker = f"budget-{uuid.uuid4().hex[:8]}"
    session = await open_chat(http, agent_id)

    first = await say(http, session["id"], f"{marker} first")
    second = await say(http, session["id"], f"{marker} second")
    after = await http.post(f"/chats/{session['id']}/messages", json={"content": "third"})
    final = (await http.get(f"/chats/{session['id']}")).json()
    [finished] = await accepted_deliveries(hooks, session["id"], "session.finished")

    assert [m["content"] for m in first["messages"]] == [f"echo: {marker} first"]
    assert first["is_final"] is False
    assert [m["content"] for m in second["messages"]] == [BUDGET_MESSAGE]
    assert second["messages"][0]["usage"] is None
    assert second["is_final"] is True
    assert _turns_asked(fake_llm[0], marker) == [f"{marker} first"]
    assert_error(after, 409, "conflict")
    assert final["status"] == "final" and final["final_reason"] == "budget"
    # One call of the conversation's; the finish's analysis calls count too once the final
    # record is written, which may or may not be by now.
    conversation = [item["cost"] for item in final["costs"] if item["type"] == "llm"]
    assert sum(conversation) == pytest.approx(ONE_CALL_USD)
    assert [m["content"] for m in final["messages"][-2:]] == [f"{marker} second", BUDGET_MESSAGE]
    assert finished.body["data"]["final_reason"] == "budget"
    listed = [
        w.id
        async for w in temporal_client.list_workflows(
            f"ParleySessionId = '{session['id']}' AND ParleyFinalReason = 'budget'"
        )
    ]
    assert len(listed) == 1


async def test_without_a_budget_message_the_user_gets_the_default_one(
    http: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    agent_id = await make_agent(model=PRICED_MODEL, budget_usd=TINY_BUDGET)
    session = await open_chat(http, agent_id)

    await say(http, session["id"], "first")
    second = await say(http, session["id"], "second")

    assert [m["content"] for m in second["messages"]] == [DEFAULT_BUDGET_MESSAGE]
    assert second["is_final"] is True


async def test_a_budget_the_session_has_not_reached_lets_it_go_on(
    http: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    # Two calls' worth: the third turn is the first one refused.
    agent_id = await make_agent(model=PRICED_MODEL, budget_usd=2 * ONE_CALL_USD)
    session = await open_chat(http, agent_id)

    replies = [await say(http, session["id"], f"turn {n}") for n in range(3)]

    assert [r["messages"][0]["content"] for r in replies] == [
        "echo: turn 0",
        "echo: turn 1",
        DEFAULT_BUDGET_MESSAGE,
    ]
    assert [r["is_final"] for r in replies] == [False, False, True]


async def test_the_server_default_budget_applies_and_an_agents_own_overrides_it(
    make_settings: SettingsFactory,
    serve_api: ApiFactory,
    api_key: str,
    worker: None,
    make_agent: AgentFactory,
) -> None:
    unbudgeted = await make_agent(model=PRICED_MODEL)
    generous = await make_agent(model=PRICED_MODEL, budget_usd=1.0)
    async with (
        serve_api(make_settings(PARLEY_SESSION_BUDGET_USD=TINY_BUDGET)) as url,
        api_client(url, api_key) as http,
    ):
        by_default = await open_chat(http, unbudgeted)
        own = await open_chat(http, generous)
        for session in (by_default, own):
            await say(http, session["id"], "first")
        default_second = await say(http, by_default["id"], "second")
        own_second = await say(http, own["id"], "second")
        default_final = (await http.get(f"/chats/{by_default['id']}")).json()

    assert [m["content"] for m in default_second["messages"]] == [DEFAULT_BUDGET_MESSAGE]
    assert default_final["final_reason"] == "budget"
    assert [m["content"] for m in own_second["messages"]] == ["echo: second"]
    assert own_second["is_final"] is False


async def test_without_any_budget_a_session_goes_on(
    http: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    session = await open_chat(http, await make_agent(model=PRICED_MODEL))

    replies = [await say(http, session["id"], f"turn {n}") for n in range(3)]

    assert [r["is_final"] for r in replies] == [False, False, False]


async def test_an_agent_shows_its_budget_and_an_update_can_remove_it(
    http: httpx.AsyncClient,
) -> None:
    body = {"name": "budgeted", "budget_usd": 0.25, "budget_message": BUDGET_MESSAGE}
    created = (await http.post("/agents", json=body)).json()
    updated = await http.patch(f"/agents/{created['id']}", json={"budget_usd": None})

    assert created["budget_usd"] == 0.25 and created["budget_message"] == BUDGET_MESSAGE
    assert updated.status_code == 200, updated.text
    assert updated.json()["budget_usd"] is None
    assert updated.json()["budget_message"] == BUDGET_MESSAGE


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ('"budget_usd": -1', "budget_usd"),
        ('"budget_usd": 0', "budget_usd"),
        ('"budget_usd": NaN', "budget_usd"),
        ('"budget_usd": Infinity', "budget_usd"),
        ('"budget_usd": "a lot"', "budget_usd"),
        ('"budget_message": ""', "budget_message"),
        (f'"budget_message": "{"x" * 16_001}"', "budget_message"),
    ],
)
async def test_a_bad_budget_is_422_naming_the_field(
    http: httpx.AsyncClient, raw: str, field: str
) -> None:
    agent = (await http.post("/agents", json={"name": "to update"})).json()
    content = "{" + f'"name": "bad budget", {raw}' + "}"
    headers = {"Content-Type": "application/json"}

    created = await http.post("/agents", content=content, headers=headers)
    updated = await http.patch(f"/agents/{agent['id']}", content="{" + raw + "}", headers=headers)

    for response in (created, updated):
        error = assert_error(response, 422, "invalid_input")
        assert field in error["message"]


async def test_a_stateless_conversation_past_its_budget_is_finished_with_the_budget_message(
    http: httpx.AsyncClient, make_agent: AgentFactory, fake_llm: tuple[FakeLLM, str]
) -> None:
    agent_id = await make_agent(
        model=PRICED_MODEL, budget_usd=TINY_BUDGET, budget_message=BUDGET_MESSAGE
    )
    marker = f"stateless-budget-{uuid.uuid4().hex[:8]}"
    first = (await turn(http, {"id": agent_id}, [user(f"{marker} first")])).json()
    history = [user(f"{marker} first"), *first["messages"], user(f"{marker} second")]

    second = (await turn(http, {"id": agent_id}, history, first["state"])).json()
    stored = (await http.get(f"/chats/{first['call_id']}")).json()

    assert first["is_finished"] is False
    assert [m["content"] for m in second["messages"]] == [BUDGET_MESSAGE]
    assert second["is_finished"] is True
    assert _turns_asked(fake_llm[0], marker) == [f"{marker} first"]
    assert stored["final_reason"] == "budget" and stored["is_final"] is True


async def test_earlier_steps_of_the_turn_in_progress_count_towards_the_budget(
    settings: Settings,
    db: async_sessionmaker[AsyncSession],
    http: httpx.AsyncClient,
    make_agent: AgentFactory,
    fake_llm: tuple[FakeLLM, str],
) -> None:
    """A turn whose first model call asked for a tool: that call's cost is not recorded yet
    when the model is asked again, and it is what uses the budget up."""
    session = await open_chat(http, await make_agent(model=PRICED_MODEL))
    marker = f"tool-step-{uuid.uuid4().hex[:8]}"
    llm = LLMActivities(
        ModelProviders(settings), db, SnapshotStore(db, SecretBox(settings.secret_keys()))
    )
    now = datetime.now(UTC)
    asked = Message(role="user", content=f"{marker} look it up", time=now)
    tool_step = Message(
        role="assistant",
        tool_calls=[ToolCall(id="call_1", name="lookup", response="found it")],
        time=now,
        usage=Usage(model=PRICED_MODEL, prompt_tokens=10, completion_tokens=5),
    )

    def request(unrecorded: list[Message]) -> SessionTurnRequest:
        return SessionTurnRequest(
            session_id=session["id"],
            recorded_count=0,
            unrecorded=unrecorded,
            budget_usd=ONE_CALL_USD,
        )

    answered = await ActivityEnvironment().run(llm.complete_session_turn, request([asked]))
    refused = await ActivityEnvironment().run(
        llm.complete_session_turn, request([asked, tool_step])
    )

    assert answered.budget_used_up is False and answered.content == f"echo: {marker} look it up"
    assert refused.budget_used_up is True and refused.content == DEFAULT_BUDGET_MESSAGE
    assert (refused.prompt_tokens, refused.completion_tokens) == (0, 0)
    assert _turns_asked(fake_llm[0], marker) == [f"{marker} look it up"]


def _turns_asked(fake: FakeLLM, marker: str) -> list[str]:
    """The user messages the model was asked to answer (analysis requests, which carry the
    whole transcript in one message, left out)."""
    return [
        last["content"]
        for request in fake.requests_for(marker)
        if (last := request["messages"][-1])["role"] == "user"
        and str(last["content"]).startswith(marker)
    ]


def test_a_snapshot_without_a_budget_keeps_the_id_it_was_stored_under() -> None:
    """Snapshots are content-addressed; one stored before agents had budget fields must
    hash as it did then (the id below is what the code before them computed)."""
    snapshot = AgentSnapshot(
        id="agent-1",
        version=3,
        spec=AgentSpec(
            name="n",
            system_prompt="hi {{x}}",
            tools=[BuiltinTool(name="finishTheConversation")],
        ),
        model=ModelConfig(provider="openai", name="gpt-4o-mini"),
    )
    budgeted = snapshot.model_copy(
        update={"spec": snapshot.spec.model_copy(update={"budget_usd": 1.0})}
    )

    assert snapshot.snapshot_id == (
        "f6b0f7a9266e87def3fabb1aad41ac4727a04e3c52d05aa15b609bdbac0bb466"
    )
    assert budgeted.snapshot_id != snapshot.snapshot_id


@pytest.mark.parametrize("value", ["0", "-0.5", "nan", "inf", "plenty"])
def test_a_bad_server_default_budget_is_refused_at_startup(
    make_settings: SettingsFactory, value: str
) -> None:
    with pytest.raises(ValidationError, match="PARLEY_SESSION_BUDGET_USD"):
        make_settings(PARLEY_SESSION_BUDGET_USD=value)
