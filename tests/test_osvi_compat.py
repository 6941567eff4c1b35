"""OSVI's chat API on Parley: a client that speaks OSVI (its routes, field names, `API-Token`
header and `{"success", "data" | "errors"}` envelope) runs OSVI's documented flows against
`/compat/osvi`; another account's agents and sessions are 404; bad input is a 422 naming the
field; every failure keeps the envelope."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from src.activities.llm import guidance_message
from src.compat.osvi import REPLACED_NOTE
from src.services.accounts import new_api_key, register_api_key
from tests.conftest import AgentFactory, ApiFactory, SettingsFactory
from tests.fakes.llm_server import FakeLLM
from tests.sessions import stored_session
from tests.test_help_requests import REQUEST_HUMAN
from tests.test_quotas import well_inside_a_minute

SESSION_FIELDS = {
    "id",
    "chat_agent_id",
    "account_id",
    "customer_id",
    "mode",
    "help_requested",
    "status",
    "current_state",
    "metadata",
    "active_human",
    "created_at",
    "updated_at",
}
ANA = {"operator_id": "op-ana", "operator_name": "Ana"}


def osvi_client(api_url: str, token: str | None) -> httpx.AsyncClient:
    headers = {"API-Token": token} if token else {}
    return httpx.AsyncClient(base_url=f"{api_url}/compat/osvi/v1", headers=headers, timeout=60)


@pytest.fixture(scope="module")
async def osvi(api_url: str, api_key: str) -> AsyncIterator[httpx.AsyncClient]:
    async with osvi_client(api_url, api_key) as client:
        yield client


@pytest.fixture(scope="module")
async def other_osvi(api_url: str, other_api_key: str) -> AsyncIterator[httpx.AsyncClient]:
    async with osvi_client(api_url, other_api_key) as client:
        yield client


def ok(response: httpx.Response) -> Any:
    """The `data` of a successful OSVI answer."""
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"success", "data"} and body["success"] is True, body
    return body["data"]


def refused(response: httpx.Response, status: int) -> str:
    """The errors of a failed OSVI answer, as one text."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"success", "errors"} and body["success"] is False, body
    assert body["errors"] and all(isinstance(e, str) and e for e in body["errors"]), body
    assert "Traceback" not in response.text
    return "; ".join(body["errors"])


def a_customer() -> str:
    return f"+1555{uuid.uuid4().int % 10**7:07d}"


async def open_session(
    osvi: httpx.AsyncClient, agent_id: str, customer_id: str | int, **fields: Any
) -> dict[str, Any]:
    body = {"agent_uuid": agent_id, "customer_id": customer_id, **fields}
    data: dict[str, Any] = ok(await osvi.post("/chat/session", json=body))
    return data


async def inbound(
    osvi: httpx.AsyncClient, agent_id: str, customer_id: str, content: str, **fields: Any
) -> dict[str, Any]:
    body = {"agent_uuid": agent_id, "customer_id": customer_id, "content": content, **fields}
    data: dict[str, Any] = ok(await osvi.post("/chat/inbound", json=body))
    return data


async def support(osvi: httpx.AsyncClient, session_id: str, **body: Any) -> dict[str, Any]:
    data: dict[str, Any] = ok(await osvi.post(f"/chat/session/{session_id}/support", json=body))
    return data


async def active(
    osvi: httpx.AsyncClient, customer_id: str, agent_id: str | None = None
) -> httpx.Response:
    query = {"customer_id": customer_id, **({"agent_uuid": agent_id} if agent_id else {})}
    return await osvi.get("/chat/session/active", params=query)


# ---- OSVI's flows -----------------------------------------------------------------------------


async def test_a_session_opened_the_osvi_way_answers_and_is_found_active(
    osvi: httpx.AsyncClient,
    http: httpx.AsyncClient,
    make_agent: AgentFactory,
    fake_llm: tuple[FakeLLM, str],
) -> None:
    agent_id, customer = await make_agent(), a_customer()
    company = f"Acme {uuid.uuid4().hex[:8]}"

    session = await open_session(
        osvi, agent_id, customer, input_fields={"company": company}, context=["VIP customer"]
    )
    turn = await inbound(osvi, agent_id, customer, "hello")
    found = ok(await active(osvi, customer, agent_id))
    by_agent = ok(await active(osvi, customer))
    await http.post(f"/chats/{session['id']}/end")

    assert set(session) == SESSION_FIELDS
    assert session["chat_agent_id"] == agent_id and session["customer_id"] == customer
    assert (session["mode"], session["status"], session["help_requested"]) == (
        "ai",
        "active",
        False,
    )
    assert session["current_state"] is None and session["active_human"] is None
    assert session["metadata"] == {
        "input_fields": {"company": company},
        "state_fields": {},
        "context": ["VIP customer"],
    }
    assert turn == {
        "session_id": session["id"],
        "reply": "echo: hello",
        "state": None,
        "mode": "ai",
        "help_requested": False,
    }
    # input_fields are the agent's prompt variables
    assert fake_llm[0].requests_for(f"You help customers of {company} on osvi.")
    assert found["id"] == session["id"] and found["account_id"] == session["account_id"]
    assert set(by_agent) == {agent_id} and by_agent[agent_id]["id"] == session["id"]


async def test_opening_again_closes_the_customers_active_session_with_that_agent_only(
    osvi: httpx.AsyncClient,
    http: httpx.AsyncClient,
    make_agent: AgentFactory,
    db: async_sessionmaker[AsyncSession],
) -> None:
    agent_id, other_agent, customer = await make_agent(), await make_agent(), a_customer()
    first = await open_session(osvi, agent_id, customer)
    with_other_agent = await open_session(osvi, other_agent, customer)

    second = await open_session(osvi, agent_id, customer)
    closed = (await http.get(f"/chats/{first['id']}")).json()
    found = ok(await active(osvi, customer, agent_id))
    by_agent = ok(await active(osvi, customer))
    row = await stored_session(db, first["id"])
    for session in (second, with_other_agent):
        await http.post(f"/chats/{session['id']}/end")

    assert second["id"] != first["id"] and second["status"] == "active"
    assert closed["status"] == "final" and closed["final_reason"] == "user_end"
    assert row.note == REPLACED_NOTE
    assert found["id"] == second["id"]
    assert {agent: s["id"] for agent, s in by_agent.items()} == {
        agent_id: second["id"],
        other_agent: with_other_agent["id"],
    }


async def test_inbound_opens_a_session_when_there_is_none_and_then_keeps_to_it(
    osvi: httpx.AsyncClient, http: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    agent_id, customer = await make_agent(), a_customer()
    no_session = await active(osvi, customer, agent_id)

    first = await inbound(osvi, agent_id, customer, "one")
    second = await inbound(osvi, agent_id, customer, "two")
    third = await inbound(osvi, agent_id, customer, "three", session_id=first["session_id"])
    view = (await http.get(f"/chats/{first['session_id']}")).json()
    await http.post(f"/chats/{first['session_id']}/end")

    assert "no active session" in refused(no_session, 404)
    assert first["session_id"] == second["session_id"] == third["session_id"]
    assert [first["reply"], second["reply"], third["reply"]] == [
        "echo: one",
        "echo: two",
        "echo: three",
    ]
    assert view["channel"] == "osvi"
    assert [m["content"] for m in view["messages"]][-2:] == ["three", "echo: three"]


async def test_a_customer_id_sent_as_a_number_is_the_same_customer_as_its_text(
    osvi: httpx.AsyncClient, http: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    agent_id, digits = await make_agent(), uuid.uuid4().int % 10**10 + 15550000000

    session = await open_session(osvi, agent_id, digits)
    turn = await inbound(osvi, agent_id, str(digits), "hi")
    await http.post(f"/chats/{session['id']}/end")

    assert session["customer_id"] == str(digits)
    assert turn["session_id"] == session["id"]


async def test_context_keeps_the_five_most_recent_non_empty_strings_and_reaches_the_model(
    osvi: httpx.AsyncClient,
    http: httpx.AsyncClient,
    make_agent: AgentFactory,
    fake_llm: tuple[FakeLLM, str],
) -> None:
    agent_id, customer = await make_agent(), a_customer()
    marker = f"ordered a blue kettle {uuid.uuid4().hex[:8]}"
    session = await open_session(
        osvi, agent_id, customer, context=["c1", "", "c2", "c3", "  ", "c4", "c5", "c6"]
    )

    injected = ok(
        await osvi.post(f"/chat/session/{session['id']}/inject_context", json={"context": marker})
    )
    await inbound(osvi, agent_id, customer, "what did I order?")
    found = ok(await active(osvi, customer, agent_id))
    await http.post(f"/chats/{session['id']}/end")

    assert session["metadata"]["context"] == ["c2", "c3", "c4", "c5", "c6"]
    assert injected == {"session_id": session["id"], "context": ["c3", "c4", "c5", "c6", marker]}
    assert found["metadata"]["context"] == injected["context"]
    assert fake_llm[0].requests_for(marker)


async def test_a_help_request_a_takeover_and_a_hand_back_read_as_osvi_support_mode(
    osvi: httpx.AsyncClient, http: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    agent_id = await make_agent(model="tool-requestHuman", tools=[REQUEST_HUMAN])
    customer = a_customer()
    asked = await inbound(osvi, agent_id, customer, json.dumps({"reason": "a refund"}))
    sid = asked["session_id"]

    taken = await support(osvi, sid, command="takeover", **ANA)
    held = ok(await active(osvi, customer, agent_id))
    unanswered = await inbound(osvi, agent_id, customer, "anyone there?", session_id=sid)
    written = await support(osvi, sid, message="Ana here: refund approved.", **ANA)
    back = await support(osvi, sid, command="end", **ANA)
    after = ok(await active(osvi, customer, agent_id))
    closed = await support(osvi, sid, command="close", message="refund done")
    view = (await http.get(f"/chats/{sid}")).json()
    gone = await active(osvi, customer, agent_id)

    assert asked["help_requested"] is True and asked["mode"] == "ai"
    assert taken == {
        "state": "ok",
        "session_id": sid,
        "command": "takeover",
        "active_human": {"id": "op-ana", "name": "Ana"},
    }
    assert held["mode"] == "support" and held["help_requested"] is False
    assert held["active_human"] == {"id": "op-ana", "name": "Ana"}
    assert unanswered == {
        "session_id": sid,
        "reply": None,
        "state": None,
        "mode": "support",
        "help_requested": False,
    }
    assert written == {"state": "ok", "session_id": sid, "command": None}
    assert back == {"state": "ok", "session_id": sid, "command": "end"}
    assert after["mode"] == "ai" and after["active_human"] is None
    assert closed == {"state": "ok", "session_id": sid, "command": "close"}
    assert view["status"] == "final" and view["final_reason"] == "user_end"
    [by_ana] = [m for m in view["messages"] if m["content"] == "Ana here: refund approved."]
    assert by_ana["author"] == {"kind": "human", "agent_id": None, "id": "op-ana", "name": "Ana"}
    assert "no active session" in refused(gone, 404)


async def test_tell_answers_at_once_with_the_guidance_and_whisper_guides_the_next_turn(
    osvi: httpx.AsyncClient, http: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    agent_id, customer = await make_agent(), a_customer()
    session = await open_session(osvi, agent_id, customer)
    sid, secret = session["id"], f"offer the 10% coupon {uuid.uuid4().hex[:8]}"

    whispered = await support(osvi, sid, command="whisper", message=secret)
    guided = await inbound(osvi, agent_id, customer, "can you do better on price?")
    told = await support(osvi, sid, command="tell", message="say thanks")
    view = (await http.get(f"/chats/{sid}")).json()
    await http.post(f"/chats/{sid}/end")

    assert whispered == {"state": "ok", "session_id": sid, "command": "whisper"}
    # The echo model repeats the last message it reads: the guidance, after the customer's.
    assert guided["reply"] == f"echo: {guidance_message([secret])}"
    assert told == {
        "state": "ok",
        "session_id": sid,
        "command": "tell",
        "reply": f"echo: {guidance_message(['say thanks'])}",
    }
    assert not [m for m in view["messages"] if m["content"] in (secret, "say thanks")]


async def test_support_without_an_operator_acts_for_the_account(
    osvi: httpx.AsyncClient, http: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    session = await open_session(osvi, await make_agent(), a_customer())

    taken = await support(osvi, session["id"], command="takeover")
    await http.post(f"/chats/{session['id']}/end")

    expected = {"id": f"account:{session['account_id']}", "name": "Support"}
    assert taken["active_human"] == expected


# ---- refusals, in the envelope --------------------------------------------------------------


async def test_every_route_needs_a_valid_api_token(api_url: str, api_key: str) -> None:
    calls = [
        ("POST", "/chat/session", {"agent_uuid": "a", "customer_id": "c"}),
        ("POST", "/chat/inbound", {"agent_uuid": "a", "customer_id": "c", "content": "hi"}),
        ("GET", "/chat/session/active?customer_id=c", None),
        ("POST", "/chat/session/s/inject_context", {"context": "x"}),
        ("POST", "/chat/session/s/support", {"command": "takeover"}),
    ]
    bearer_only = {"Authorization": f"Bearer {api_key}"}
    for token, headers in [(None, {}), ("not-a-key", {}), (None, bearer_only)]:
        async with osvi_client(api_url, token) as client:
            for method, path, body in calls:
                response = await client.request(method, path, json=body, headers=headers)
                message = refused(response, 401)
                assert "API-Token" in message or "invalid API key" in message


async def test_another_accounts_agent_or_session_is_404(
    osvi: httpx.AsyncClient,
    other_osvi: httpx.AsyncClient,
    http: httpx.AsyncClient,
    make_agent: AgentFactory,
) -> None:
    agent_id, customer = await make_agent(), a_customer()
    session = await open_session(osvi, agent_id, customer)
    sid = session["id"]

    opened = await other_osvi.post(
        "/chat/session", json={"agent_uuid": agent_id, "customer_id": customer}
    )
    sent = await other_osvi.post(
        "/chat/inbound", json={"agent_uuid": agent_id, "customer_id": customer, "content": "hi"}
    )
    sent_to_session = await other_osvi.post(
        "/chat/inbound",
        json={"agent_uuid": agent_id, "customer_id": customer, "content": "hi", "session_id": sid},
    )
    found = await active(other_osvi, customer, agent_id)
    by_agent = await active(other_osvi, customer)
    injected = await other_osvi.post(f"/chat/session/{sid}/inject_context", json={"context": "x"})
    commands = [
        await other_osvi.post(f"/chat/session/{sid}/support", json=body)
        for body in (
            {"command": "takeover"},
            {"command": "tell", "message": "x"},
            {"command": "whisper", "message": "x"},
            {"command": "end"},
            {"command": "close"},
            {"message": "x"},
        )
    ]
    still = ok(await active(osvi, customer, agent_id))
    await http.post(f"/chats/{sid}/end")

    for response in (opened, sent, sent_to_session, found, injected, *commands):
        assert "not found" in refused(response, 404) or "no active session" in response.text
    assert ok(by_agent) == {}
    assert still["id"] == sid and still["mode"] == "ai" and still["status"] == "active"


async def test_bad_input_is_a_422_naming_the_field(
    osvi: httpx.AsyncClient, http: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    agent_id, customer = await make_agent(), a_customer()
    session = await open_session(osvi, agent_id, customer)
    sid = session["id"]
    someone_else = await open_session(osvi, agent_id, a_customer())
    base = {"agent_uuid": agent_id, "customer_id": customer}
    cases: list[tuple[str, str, Any, str]] = [
        ("POST", "/chat/session", {"customer_id": customer}, "agent_uuid"),
        ("POST", "/chat/session", {"agent_uuid": agent_id, "customer_id": ""}, "customer_id"),
        ("POST", "/chat/session", {**base, "input_fields": {"channel": "x"}}, "input_fields"),
        ("POST", "/chat/session", {**base, "input_fields": ["x"]}, "input_fields"),
        ("POST", "/chat/session", {**base, "context": "not a list"}, "context"),
        ("POST", "/chat/session", {**base, "metadata": {}}, "metadata"),
        ("POST", "/chat/inbound", base, "content"),
        ("POST", "/chat/inbound", {**base, "content": "   "}, "content"),
        (
            "POST",
            "/chat/inbound",
            {**base, "content": "hi", "session_id": someone_else["id"]},
            "session_id",
        ),
        ("GET", "/chat/session/active", None, "customer_id"),
        ("POST", f"/chat/session/{sid}/inject_context", {"context": ""}, "context"),
        ("POST", f"/chat/session/{sid}/inject_context", {}, "context"),
        ("POST", f"/chat/session/{sid}/support", {"command": "dance"}, "command"),
        ("POST", f"/chat/session/{sid}/support", {"command": "tell"}, "message"),
        ("POST", f"/chat/session/{sid}/support", {"command": "whisper"}, "message"),
        ("POST", f"/chat/session/{sid}/support", {}, "message"),
        (
            "POST",
            f"/chat/session/{sid}/support",
            {"command": "takeover", "operator_id": "ana"},
            "operator_name",
        ),
    ]
    answers = [
        (await osvi.request(method, path, json=body), field) for method, path, body, field in cases
    ]
    not_json = await osvi.post(
        "/chat/session", content=b'{"agent_uuid": ', headers={"Content-Type": "application/json"}
    )
    untouched = ok(await active(osvi, customer, agent_id))
    for opened in (session, someone_else):
        await http.post(f"/chats/{opened['id']}/end")

    for response, field in answers:
        assert field in refused(response, 422), (field, response.text)
    assert "not valid JSON" in refused(not_json, 422)
    assert untouched["id"] == sid and untouched["mode"] == "ai"


async def test_what_the_session_does_not_allow_now_is_409_in_the_envelope(
    osvi: httpx.AsyncClient, http: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    agent_id, customer = await make_agent(), a_customer()
    session = await open_session(osvi, agent_id, customer)
    sid = session["id"]

    message_unheld = await osvi.post(f"/chat/session/{sid}/support", json={"message": "hi"})
    end_unheld = await osvi.post(f"/chat/session/{sid}/support", json={"command": "end"})
    await support(osvi, sid, command="takeover", **ANA)
    tell_held = await osvi.post(
        f"/chat/session/{sid}/support", json={"command": "tell", "message": "x"}
    )
    other_operator = await osvi.post(
        f"/chat/session/{sid}/support",
        json={"command": "takeover", "operator_id": "op-ben", "operator_name": "Ben"},
    )
    await support(osvi, sid, command="close")
    closed_again = await support(osvi, sid, command="close")
    to_closed = await osvi.post(
        "/chat/inbound",
        json={"agent_uuid": agent_id, "customer_id": customer, "content": "hi", "session_id": sid},
    )
    context_closed = await osvi.post(
        f"/chat/session/{sid}/inject_context", json={"context": "late"}
    )

    assert "take it over first" in refused(message_unheld, 409)
    assert "take it over first" in refused(end_unheld, 409)
    assert "hand it back first" in refused(tell_held, 409)
    assert "holds the session" in refused(other_operator, 409)
    assert closed_again["command"] == "close"
    assert "final" in refused(to_closed, 409)
    assert "final" in refused(context_closed, 409)


async def test_front_door_refusals_and_unknown_routes_keep_the_envelope(
    osvi: httpx.AsyncClient, http: httpx.AsyncClient
) -> None:
    form = await osvi.post(
        "/chat/session",
        content=b"agent_uuid=a",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    unknown = await osvi.get("/chat/sessions")
    wrong_method = await osvi.delete("/chat/inbound")
    native = await http.get("/chats/not-a-session")

    assert "JSON" in refused(form, 415)
    refused(unknown, 404)
    refused(wrong_method, 405)
    assert set(native.json()) == {"error"}  # the native routes keep their own shape


async def test_requests_over_the_keys_rate_are_429_in_the_envelope(
    make_settings: SettingsFactory, serve_api: ApiFactory, db: async_sessionmaker[AsyncSession]
) -> None:
    key = new_api_key()
    await register_api_key(db, key, account_id=f"osvi-rate-{uuid.uuid4().hex[:8]}")
    async with (
        serve_api(make_settings(PARLEY_RATE_LIMIT_PER_MINUTE=2)) as url,
        osvi_client(url, key) as client,
    ):
        await well_inside_a_minute()
        allowed = [(await active(client, a_customer())).status_code for _ in range(2)]
        over = await active(client, a_customer())

    assert allowed == [200, 200]
    assert "2 requests a minute" in refused(over, 429)
    assert 1 <= int(over.headers["Retry-After"]) <= 60


async def test_the_openapi_document_lists_the_osvi_routes(api_url: str) -> None:
    async with httpx.AsyncClient(base_url=api_url) as client:
        document = (await client.get("/openapi.json")).json()

    assert {
        "/compat/osvi/v1/chat/session",
        "/compat/osvi/v1/chat/inbound",
        "/compat/osvi/v1/chat/session/active",
        "/compat/osvi/v1/chat/session/{session_id}/inject_context",
        "/compat/osvi/v1/chat/session/{session_id}/support",
    } <= set(document["paths"])
