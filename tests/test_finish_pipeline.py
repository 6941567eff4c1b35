"""When a session ends: analysis, a signed completion webhook, the audit log, and costs."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from src.domain import SessionStatus
from src.workflows.chat_session_models import SessionState
from src.workflows.session_analysis import session_analysis_workflow_id
from tests.chaos.harness import CuttableProxy
from tests.conftest import WEBHOOK_SECRET as SECRET
from tests.conftest import AgentFactory, api_client
from tests.fakes.llm_server import FakeLLM
from tests.fakes.webhook_receiver import Answer, WebhookReceiver
from tests.servers import bound_socket, served
from tests.sessions import endpoint_open_body, open_chat, say, stored_session

ANALYSIS = {
    "summary_prompt": "Summarise the conversation in one sentence.",
    "structured_outputs": [
        {
            "name": "outcome",
            "schema": {
                "type": "object",
                "properties": {
                    "resolved": {"type": "boolean"},
                    "topic": {"type": "string", "enum": ["orders", "billing"]},
                },
                "required": ["resolved", "topic"],
                "additionalProperties": False,
            },
        }
    ],
}


async def finishing_agent(
    make_agent: AgentFactory, url: str, model: str = "echo", **spec: Any
) -> str:
    webhook = {"url": url, "secret": SECRET, **spec.pop("webhook", {})}
    return str(await make_agent(model=model, analysis=ANALYSIS, webhook=webhook, **spec))


async def accepted_deliveries(
    hooks: WebhookReceiver, session_id: str, event: str, count: int = 1
) -> list[Any]:
    """Wait (bounded) for `count` accepted deliveries of an event."""
    return await hooks.wait_accepted(session_id, event, count, within=30)


async def analysis_held_agent(make_agent: AgentFactory, url: str, tag: str) -> str:
    """An agent whose model holds its analysis call (model hold-<tag>) until released."""
    return await make_agent(
        model=f"hold-{tag}",
        analysis={"summary_prompt": f"Summarise conversation {tag}."},
        webhook={"url": url, "secret": SECRET},
    )


async def delivery_outcome(
    client: Client, db: async_sessionmaker[AsyncSession], session_id: str, within: float = 120
) -> bool:
    """What the completion webhook's delivery workflow came to (True: accepted). Once it has
    returned, no further attempt can follow, so counting attempts after it is exact."""

    async def outcome() -> bool:
        # The session's run ends once it has started the analysis workflow (an agent with
        # analysis) or the delivery workflow; the analysis workflow once it has started it.
        session = await stored_session(db, session_id)
        await client.get_workflow_handle(session.workflow_id).result()
        analysis = client.get_workflow_handle(session_analysis_workflow_id(session_id))
        try:
            await analysis.result()
        except RPCError as error:
            if error.status != RPCStatusCode.NOT_FOUND:
                raise
        delivery = client.get_workflow_handle(f"webhook-{session_id}:session.finished")
        return bool(await delivery.result())

    return await asyncio.wait_for(outcome(), within)


async def audit_log(http: httpx.AsyncClient, session_id: str) -> list[dict[str, Any]]:
    response = await http.get(f"/chats/{session_id}/events", params={"limit": 500})
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


def recorded_attempts(events: list[dict[str, Any]]) -> list[tuple[int, int | None, str | None]]:
    """(attempt, status code, error) of every recorded completion-webhook attempt."""
    return [
        (e["data"]["attempt"], e["data"]["status_code"], e["data"]["error"])
        for e in events
        if e["kind"] == "webhook.attempt" and e["data"]["event"] == "session.finished"
    ]


async def wait_recorded_attempts(
    http: httpx.AsyncClient, session_id: str, count: int
) -> list[tuple[int, int | None, str | None]]:
    """Poll the audit log (bounded) until `count` delivery attempts are recorded; a receiver
    that is not listening sees nothing, so the log is the only witness."""
    for _ in range(600):
        attempts = recorded_attempts(await audit_log(http, session_id))
        if len(attempts) >= count:
            return attempts
        await asyncio.sleep(0.1)
    raise AssertionError(f"fewer than {count} delivery attempts recorded for {session_id}")


async def final_with_artifact(http: httpx.AsyncClient, session_id: str) -> dict[str, Any]:
    for _ in range(300):
        session = (await http.get(f"/chats/{session_id}")).json()
        if session["artifact"] is not None:
            return dict(session)
        await asyncio.sleep(0.1)
    raise AssertionError("the artifact never appeared")


async def test_completion_webhook_is_signed_and_carries_the_finished_session(
    http: httpx.AsyncClient,
    make_agent: AgentFactory,
    receiver: tuple[WebhookReceiver, str],
) -> None:
    hooks, url = receiver
    agent_id = await finishing_agent(make_agent, url)
    session = await open_chat(http, agent_id, external_id={"ticket": str(uuid.uuid4())})
    await say(http, session["id"], "my order is late")

    ended = await http.post(f"/chats/{session['id']}/end", json={"note": "escalated"})
    [delivery] = await accepted_deliveries(hooks, session["id"], "session.finished")

    assert ended.json()["is_final"] is True
    assert delivery.signed and delivery.problems == []
    assert delivery.idempotency_key == f"{session['id']}:session.finished"
    data = delivery.body["data"]
    assert data["id"] == session["id"] and data["agent_id"] == agent_id
    assert data["agent_version"] == 1 and data["channel"] == "web"
    assert set(data["external_id"]) == {"ticket"}
    assert (data["final_reason"], data["note"]) == ("user_end", "escalated")
    assert data["finished_time"] and data["created_time"]
    assert [m["content"] for m in data["messages"]] == [
        "my order is late",
        "echo: my order is late",
    ]
    assert data["artifact"]["summary"] == "summary of 2 lines"
    assert data["artifact"]["structured_outputs"]["outcome"] == {
        "status": "ok",
        "value": {"resolved": True, "topic": "orders"},
        "error": None,
        "attempts": 1,
    }
    assert data["costs"][0]["type"] == "llm"


@pytest.mark.parametrize("reason", ["user_end", "agent_finish", "ttl"])
async def test_every_finish_reason_runs_the_pipeline(
    http: httpx.AsyncClient,
    make_agent: AgentFactory,
    receiver: tuple[WebhookReceiver, str],
    reason: str,
) -> None:
    hooks, url = receiver
    session = await open_chat(http, await finishing_agent(make_agent, url), ttl_seconds=2)

    if reason == "user_end":
        await http.post(f"/chats/{session['id']}/end")
    elif reason == "agent_finish":
        await say(http, session["id"], "please finish")
    [delivery] = await accepted_deliveries(hooks, session["id"], "session.finished")
    final = await final_with_artifact(http, session["id"])

    assert delivery.body["data"]["final_reason"] == reason
    assert final["final_reason"] == reason
    assert final["artifact"]["summary"].startswith("summary of")


async def test_a_session_reads_final_at_once_and_gets_its_artifact_when_analysis_completes(
    http: httpx.AsyncClient,
    make_agent: AgentFactory,
    receiver: tuple[WebhookReceiver, str],
    fake_llm: tuple[FakeLLM, str],
) -> None:
    hooks, url = receiver
    llm, _ = fake_llm
    tag = uuid.uuid4().hex[:12]
    agent_id = await analysis_held_agent(make_agent, url, tag)
    session = await open_chat(http, agent_id)

    ended = (await http.post(f"/chats/{session['id']}/end")).json()
    await llm.wait_held(tag, 1, within=60)
    while_analysing = (await http.get(f"/chats/{session['id']}")).json()
    delivered_while_analysing = list(hooks.attempts(session["id"], "session.finished"))
    llm.release_held(tag)
    analysed = await final_with_artifact(http, session["id"])
    [delivery] = await accepted_deliveries(hooks, session["id"], "session.finished")

    assert (ended["is_final"], ended["artifact"]) == (True, None)
    assert (while_analysing["is_final"], while_analysing["status"]) == (True, "final")
    assert while_analysing["final_reason"] == "user_end"
    assert while_analysing["artifact"] is None
    assert delivered_while_analysing == []  # the completion webhook carries the artifact
    assert analysed["artifact"]["summary"] == "summary of 0 lines"
    assert delivery.body["data"]["artifact"] == analysed["artifact"]


async def test_an_endpoint_opens_its_next_session_while_the_last_one_is_still_analysed(
    http: httpx.AsyncClient,
    make_agent: AgentFactory,
    receiver: tuple[WebhookReceiver, str],
    fake_llm: tuple[FakeLLM, str],
    temporal_client: Client,
    db: async_sessionmaker[AsyncSession],
) -> None:
    hooks, url = receiver
    llm, _ = fake_llm
    tag = uuid.uuid4().hex[:12]
    agent_id = await analysis_held_agent(make_agent, url, tag)
    body = endpoint_open_body(agent_id)
    first = await http.post("/chats", json=body)
    workflow_id = (await stored_session(db, first.json()["id"])).workflow_id
    first_run_id = (await temporal_client.get_workflow_handle(workflow_id).describe()).run_id
    first_run = temporal_client.get_workflow_handle(
        workflow_id, run_id=first_run_id, result_type=SessionState
    )

    await http.post(f"/chats/{first.json()['id']}/end")
    await llm.wait_held(tag, 1, within=60)
    second = await http.post("/chats", json=body)
    closed = await first_run.result()  # the session's run is over, its analysis is not
    while_analysing = (await http.get(f"/chats/{first.json()['id']}")).json()
    delivered_while_analysing = list(hooks.attempts(first.json()["id"], "session.finished"))
    llm.release_held(tag)
    analysed = await final_with_artifact(http, first.json()["id"])
    [delivery] = await accepted_deliveries(hooks, first.json()["id"], "session.finished")

    assert closed.status == SessionStatus.FINAL
    assert second.status_code == 201, second.text  # a new session, not the finishing one
    assert second.json()["id"] != first.json()["id"]
    assert (second.json()["is_final"], second.json()["status"]) == (False, "active")
    assert (while_analysing["status"], while_analysing["artifact"]) == ("final", None)
    assert delivered_while_analysing == []  # the completion webhook waits for the artifact
    assert analysed["artifact"]["summary"] == "summary of 0 lines"
    assert delivery.body["data"]["artifact"] == analysed["artifact"]


async def test_a_receiver_that_is_down_for_a_while_gets_exactly_one_accepted_delivery(
    http: httpx.AsyncClient,
    make_agent: AgentFactory,
    receiver: tuple[WebhookReceiver, str],
    temporal_client: Client,
    db: async_sessionmaker[AsyncSession],
) -> None:
    hooks, url = receiver
    session = await open_chat(http, await finishing_agent(make_agent, url))
    hooks.answers[session["id"]] = [Answer(503)] * 3

    await http.post(f"/chats/{session['id']}/end")
    delivered = await delivery_outcome(temporal_client, db, session["id"])
    events = await audit_log(http, session["id"])

    attempts = hooks.attempts(session["id"], "session.finished")
    assert delivered is True
    assert [d.status for d in attempts] == [503, 503, 503, 200]
    assert len({d.idempotency_key for d in attempts}) == 1
    assert recorded_attempts(events) == [
        (1, 503, "HTTP 503"), (2, 503, "HTTP 503"), (3, 503, "HTTP 503"), (4, 200, None)
    ]  # fmt: skip
    assert [e["data"]["attempts"] for e in events if e["kind"] == "webhook.delivered"] == [4]


@pytest.mark.parametrize("retry_after", [None, "3"], ids=["no-retry-after", "retry-after-3"])
async def test_a_receiver_answering_429_gets_the_event_again_and_accepts_it_once(
    http: httpx.AsyncClient,
    make_agent: AgentFactory,
    receiver: tuple[WebhookReceiver, str],
    temporal_client: Client,
    db: async_sessionmaker[AsyncSession],
    retry_after: str | None,
) -> None:
    hooks, url = receiver
    session = await open_chat(http, await finishing_agent(make_agent, url))
    headers = {"Retry-After": retry_after} if retry_after else {}
    hooks.answers[session["id"]] = [Answer(429, headers)]

    await http.post(f"/chats/{session['id']}/end")
    delivered = await delivery_outcome(temporal_client, db, session["id"])
    events = await audit_log(http, session["id"])

    first, second = hooks.attempts(session["id"], "session.finished")
    assert delivered is True
    assert (first.status, second.status) == (429, 200)
    assert first.idempotency_key == second.idempotency_key
    assert recorded_attempts(events) == [(1, 429, "HTTP 429"), (2, 200, None)]
    [limited] = [e["data"] for e in events if e["kind"] == "webhook.attempt"][:1]
    assert limited["retry_after_seconds"] == (float(retry_after) if retry_after else None)
    if retry_after:
        # Asked to wait 3 s (the backoff alone would be 1 s): the next attempt came no sooner.
        assert second.received - first.received >= float(retry_after)
    assert [e["data"]["attempts"] for e in events if e["kind"] == "webhook.delivered"] == [2]


async def test_an_endpoint_refusing_connections_for_a_while_gets_exactly_one_accepted_delivery(
    http: httpx.AsyncClient,
    make_agent: AgentFactory,
    receiver: tuple[WebhookReceiver, str],
    temporal_client: Client,
    db: async_sessionmaker[AsyncSession],
) -> None:
    hooks, _ = receiver
    not_listening = bound_socket()  # connections to its port are refused until it is served
    port = not_listening.getsockname()[1]
    session = await open_chat(
        http, await finishing_agent(make_agent, f"http://127.0.0.1:{port}/hooks")
    )

    await http.post(f"/chats/{session['id']}/end")
    await wait_recorded_attempts(http, session["id"], 2)
    async with served(hooks.app, not_listening):
        delivered = await delivery_outcome(temporal_client, db, session["id"])
    events = await audit_log(http, session["id"])

    *refused, accepted = recorded_attempts(events)
    assert delivered is True
    assert len(refused) >= 2 and {(status, error) for _, status, error in refused} == {
        (None, "ConnectError")
    }
    assert accepted == (len(refused) + 1, 200, None)
    assert [d.status for d in hooks.attempts(session["id"], "session.finished")] == [200]
    assert [e["data"]["attempts"] for e in events if e["kind"] == "webhook.delivered"] == [
        len(refused) + 1
    ]


async def test_an_endpoint_resetting_connections_for_a_while_gets_exactly_one_accepted_delivery(
    http: httpx.AsyncClient,
    make_agent: AgentFactory,
    receiver: tuple[WebhookReceiver, str],
    temporal_client: Client,
    db: async_sessionmaker[AsyncSession],
) -> None:
    hooks, url = receiver
    proxy = CuttableProxy(upstream_port=int(url.rsplit(":", 1)[1].split("/", 1)[0]))
    await proxy.start()
    proxy.cut()  # every connection is reset as soon as it is accepted
    try:
        session = await open_chat(
            http, await finishing_agent(make_agent, f"http://127.0.0.1:{proxy.port}/hooks")
        )
        await http.post(f"/chats/{session['id']}/end")
        await proxy.wait_refused(2, within=60)
        proxy.restore()
        delivered = await delivery_outcome(temporal_client, db, session["id"])
    finally:
        await proxy.close()
    events = await audit_log(http, session["id"])

    *reset, accepted = recorded_attempts(events)
    assert delivered is True
    assert len(reset) >= 2
    assert all(status is None and error for _, status, error in reset), reset
    assert accepted == (len(reset) + 1, 200, None)
    assert [d.status for d in hooks.attempts(session["id"], "session.finished")] == [200]


@pytest.mark.parametrize("status", [401, 400, 404, 410, 422])
async def test_a_receiver_refusing_with_4xx_is_not_retried(
    http: httpx.AsyncClient,
    make_agent: AgentFactory,
    receiver: tuple[WebhookReceiver, str],
    temporal_client: Client,
    db: async_sessionmaker[AsyncSession],
    status: int,
) -> None:
    hooks, url = receiver
    # 401: the receiver cannot verify the signature (another secret); others: scripted answers
    webhook = {"secret": "whsec-wrong-secret-000000"} if status == 401 else {}
    session = await open_chat(http, await finishing_agent(make_agent, url, webhook=webhook))
    hooks.answers[session["id"]] = [Answer(status)]

    await http.post(f"/chats/{session['id']}/end")
    delivered = await delivery_outcome(temporal_client, db, session["id"])
    events = await audit_log(http, session["id"])

    assert delivered is False
    assert [d.status for d in hooks.attempts(session["id"], "session.finished")] == [status]
    assert recorded_attempts(events) == [(1, status, f"HTTP {status}")]
    assert [e["kind"] for e in events if e["kind"].startswith("webhook.")] == [
        "webhook.attempt", "webhook.failed"
    ]  # fmt: skip


async def test_signatures_carry_every_secret_while_one_rotates(
    http: httpx.AsyncClient, make_agent: AgentFactory, receiver: tuple[WebhookReceiver, str]
) -> None:
    hooks, url = receiver
    agent_id = await finishing_agent(
        make_agent,
        url,
        webhook={"secret": "whsec-new-secret-00000000", "previous_secrets": [SECRET]},
    )
    session = await open_chat(http, agent_id)

    await http.post(f"/chats/{session['id']}/end")
    [delivery] = await accepted_deliveries(hooks, session["id"], "session.finished")

    assert delivery.signed  # the receiver still only knows the previous secret


@pytest.mark.parametrize(
    ("model", "status", "attempts"), [("invalid-json-2", "ok", 3), ("invalid-json-9", "failed", 3)]
)
async def test_invalid_structured_output_is_retried_then_recorded_as_failed(
    http: httpx.AsyncClient,
    make_agent: AgentFactory,
    receiver: tuple[WebhookReceiver, str],
    model: str,
    status: str,
    attempts: int,
) -> None:
    _, url = receiver
    session = await open_chat(http, await finishing_agent(make_agent, url, model=model))
    await say(http, session["id"], f"unique conversation {uuid.uuid4()}")

    await http.post(f"/chats/{session['id']}/end")
    result = (await final_with_artifact(http, session["id"]))["artifact"]["structured_outputs"]

    outcome = result["outcome"]
    assert (outcome["status"], outcome["attempts"]) == (status, attempts)
    if status == "failed":
        assert "3 invalid answers" in outcome["error"]
        assert "is a required property" in outcome["error"]
        assert outcome["value"] is None


async def test_lifecycle_events_are_delivered_when_subscribed(
    http: httpx.AsyncClient, make_agent: AgentFactory, receiver: tuple[WebhookReceiver, str]
) -> None:
    hooks, url = receiver
    agent_id = await finishing_agent(
        make_agent,
        url,
        first_message="hello",
        webhook={"events": ["session.opened", "message", "session.finished"]},
    )
    session = await open_chat(http, agent_id)
    await say(http, session["id"], "hi there")
    await http.post(f"/chats/{session['id']}/end")

    await accepted_deliveries(hooks, session["id"], "session.finished")
    await accepted_deliveries(hooks, session["id"], "message", count=3)
    opened = await accepted_deliveries(hooks, session["id"], "session.opened")

    messages = sorted(
        (d.body["data"] for d in hooks.accepted(session["id"], "message")), key=lambda m: m["seq"]
    )
    assert [(m["seq"], m["role"], m["content"]) for m in messages] == [
        (0, "assistant", "hello"), (1, "user", "hi there"), (2, "assistant", "echo: hi there")
    ]  # fmt: skip
    assert opened[0].body["data"]["agent_id"] == agent_id


async def test_the_audit_log_records_the_sessions_life(
    http: httpx.AsyncClient,
    make_agent: AgentFactory,
    receiver: tuple[WebhookReceiver, str],
    tools: Any,
) -> None:
    _, url = receiver
    _, tool_base = tools
    agent_id = await finishing_agent(
        make_agent,
        url,
        model="tool-lookup_order",
        tools=[{"type": "webhook", "name": "lookup_order", "url": f"{tool_base}/echo"}],
    )
    session = await open_chat(http, agent_id)
    await say(http, session["id"], '{"id": "7"}')
    await http.post(f"/chats/{session['id']}/end", json={"note": "thanks"})
    await final_with_artifact(http, session["id"])
    for _ in range(100):
        page = (await http.get(f"/chats/{session['id']}/events", params={"limit": 5})).json()
        rest = (
            await http.get(f"/chats/{session['id']}/events", params={"cursor": page["next_cursor"]})
        ).json()
        events = page["items"] + rest["items"]
        if any(e["kind"] == "webhook.delivered" for e in events):
            break
        await asyncio.sleep(0.1)

    kinds = [e["kind"] for e in events]
    assert kinds[0] == "session.opened"
    assert kinds.count("message") == 3
    for kind in ("tool.call", "session.end_requested", "session.finished", "finish.analysis",
                 "webhook.attempt", "webhook.delivered"):  # fmt: skip
        assert kind in kinds, kinds
    [tool] = [e["data"] for e in events if e["kind"] == "tool.call"]
    assert tool["name"] == "lookup_order" and tool["outcome"] == "ok"
    assert tool["duration_ms"] >= 0
    [end] = [e["data"] for e in events if e["kind"] == "session.end_requested"]
    assert end == {"note": "thanks", "reason": "user_end"}
    assert len({e["id"] for e in events}) == len(events)


async def test_costs_come_from_token_usage_and_the_price_table(
    make_settings: Any,
    serve_api: Any,
    api_key: str,
    make_agent: AgentFactory,
    receiver: tuple[WebhookReceiver, str],
) -> None:
    _, url = receiver
    priced = make_settings(
        PARLEY_MODEL_PRICES='{"echo": {"prompt": 1000000, "completion": 2000000}}'
    )
    agent_id = await finishing_agent(make_agent, url)
    async with serve_api(priced) as api, api_client(api, api_key) as http:
        session = await open_chat(http, agent_id)
        turn = await say(http, session["id"], "price me")
        await http.post(f"/chats/{session['id']}/end")
        final = await final_with_artifact(http, session["id"])

    # the fake reports 10 prompt + 5 completion tokens per call: $10 + $10 = $20 a call
    assert turn["messages"][0]["usage"] == {
        "model": "echo", "served_model": "echo", "prompt_tokens": 10, "completion_tokens": 5
    }  # fmt: skip
    llm, analysis = final["costs"]
    assert (llm["type"], llm["model"], llm["cost"], llm["priced"]) == ("llm", "echo", 20.0, True)
    assert (analysis["type"], analysis["prompt_tokens"], analysis["cost"]) == ("analysis", 20, 40.0)
    assert final["cost"] == 60.0


async def test_a_model_answered_under_a_dated_name_is_priced_by_its_configured_name(
    http: httpx.AsyncClient, make_agent: AgentFactory, receiver: tuple[WebhookReceiver, str]
) -> None:
    _, url = receiver
    agent_id = await finishing_agent(make_agent, url, model="gpt-4o-mini")
    session = await open_chat(http, agent_id)
    turn = await say(http, session["id"], "price me")
    await http.post(f"/chats/{session['id']}/end")
    final = await final_with_artifact(http, session["id"])

    assert turn["messages"][0]["usage"]["served_model"] == "gpt-4o-mini-2024-07-18"
    llm, analysis = final["costs"]
    # gpt-4o-mini: $0.15 / $0.60 per million tokens; 10 + 5 tokens a call
    assert (llm["model"], llm["priced"]) == ("gpt-4o-mini", True)
    assert llm["cost"] == pytest.approx(4.5e-06)
    assert (analysis["priced"], analysis["cost"]) == (True, pytest.approx(9e-06))
    assert final["cost"] == pytest.approx(1.35e-05)


async def test_an_unpriced_model_name_falls_back_to_the_longest_price_prefix_of_the_served_name(
    http: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    agent_id = await make_agent(model="served-gpt-4.1-nano-2025-04-14")
    session = await open_chat(http, agent_id)
    await say(http, session["id"], "price me")

    [llm] = (await http.get(f"/chats/{session['id']}")).json()["costs"]

    # gpt-4.1-nano ($0.10 / $0.40), not the shorter gpt-4.1 ($2 / $8)
    assert (llm["model"], llm["priced"], llm["cost"]) == (
        "served-gpt-4.1-nano-2025-04-14", True, pytest.approx(3e-06)
    )  # fmt: skip
