"""Payload encryption: Temporal history holds ciphertext; the codec endpoint reads it back."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from src.sealing.state_envelope import new_key_setting
from src.temporal.client import connect_temporal
from src.worker import running_worker
from tests.conftest import AgentFactory, api_client
from tests.fakes.tool_server import FakeToolServer
from tests.sessions import open_chat, say, stored_session

KEYS = new_key_setting("t1")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def test_history_holds_ciphertext_and_sessions_still_work(
    make_settings: Any,
    serve_api: Any,
    api_key: str,
    make_agent: AgentFactory,
    temporal_client: Client,
    db: async_sessionmaker[AsyncSession],
) -> None:
    settings = make_settings(
        TEMPORAL_TASK_QUEUE=f"codec-{uuid.uuid4().hex[:8]}", PARLEY_PAYLOAD_KEYS=KEYS
    )
    secret_text = f"my card is 4111-{uuid.uuid4().hex[:8]}"
    encrypted_client = await connect_temporal(settings)
    agent_id = await make_agent(system_prompt="private prompt")
    async with (
        running_worker(settings, encrypted_client),
        serve_api(settings) as url,
        api_client(url, api_key) as http,
    ):
        session = await open_chat(http, agent_id)
        turn = await say(http, session["id"], secret_text)
        ended = await http.post(f"/chats/{session['id']}/end")
    row = await stored_session(db, session["id"])
    workflow_id = row.workflow_id
    raw = await temporal_client.get_workflow_handle(workflow_id).fetch_history()
    decoded = await encrypted_client.get_workflow_handle(workflow_id).fetch_history()

    assert turn["messages"][-1]["content"] == f"echo: {secret_text}"
    assert ended.json()["is_final"] is True
    raw_bytes = b"".join(event.SerializeToString() for event in raw.events)
    assert secret_text.encode() not in raw_bytes
    assert b"binary/encrypted" in raw_bytes
    update = next(
        e
        for e in raw.events
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED
    )
    [payload] = (
        update.workflow_execution_update_accepted_event_attributes.accepted_request.input.args.payloads
    )
    assert payload.metadata["encoding"] == b"binary/encrypted"
    assert payload.metadata["encryption-key-id"] == b"t1"
    assert len(decoded.events) == len(raw.events)


async def test_failed_tool_calls_leave_no_arguments_or_answers_in_history(
    make_settings: Any,
    serve_api: Any,
    api_key: str,
    temporal_client: Client,
    db: async_sessionmaker[AsyncSession],
    tools: tuple[FakeToolServer, str],
) -> None:
    _, base = tools
    queue = f"codec-{uuid.uuid4().hex[:8]}"
    # The API accepts 127.0.0.2; the worker refuses it when called: a failed activity.
    api_settings = make_settings(
        TEMPORAL_TASK_QUEUE=queue,
        PARLEY_PAYLOAD_KEYS=KEYS,
        PARLEY_TOOL_URL_ALLOWLIST="127.0.0.1,127.0.0.2",
    )
    worker_settings = make_settings(TEMPORAL_TASK_QUEUE=queue, PARLEY_PAYLOAD_KEYS=KEYS)
    local = base.replace("127.0.0.1", "127.0.0.2")
    mismatch, rejected, refused = (f"secret-{uuid.uuid4().hex[:8]}" for _ in range(3))
    encrypted_client = await connect_temporal(worker_settings)
    async with (
        running_worker(worker_settings, encrypted_client),
        serve_api(api_settings) as url,
        api_client(url, api_key) as http,
    ):
        rejecting = await http.post("/agents", json=tool_agent(f"{base}/reject"))
        private = await http.post("/agents", json=tool_agent(f"{local}/echo"))
        first = await open_chat(http, rejecting.json()["id"])
        broken = await say(http, first["id"], f'{{"id": ["{mismatch}"]}}')
        answered = await say(http, first["id"], f'{{"id": "{rejected}"}}')
        second = await open_chat(http, private.json()["id"])
        await say(http, second["id"], f'{{"id": "{refused}"}}')
    histories = [
        await temporal_client.get_workflow_handle(
            (await stored_session(db, session["id"])).workflow_id
        ).fetch_history()
        for session in (first, second)
    ]
    raw_bytes = b"".join(e.SerializeToString() for h in histories for e in h.events)
    [failed] = [
        e.activity_task_failed_event_attributes.failure
        for e in histories[1].events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED
    ]
    failure = await encrypted_client.data_converter.decode_failure(failed)

    # the model still reads the details, through the (encrypted) activity result
    [broken_call] = broken["messages"][0]["tool_calls"]
    assert f"['{mismatch}'] is not of type 'string'" in broken_call["response"]
    [answered_call] = answered["messages"][0]["tool_calls"]
    assert answered_call["response"] == "error: the tool answered HTTP 404: no such order"
    for plaintext in (mismatch, rejected, refused, "no such order", "is not of type"):
        assert plaintext.encode() not in raw_bytes, plaintext
    # failure messages are encrypted too
    assert failed.message == "Encoded failure"
    assert b"not a public address" not in raw_bytes
    assert "not a public address" in str(failure)


def tool_agent(url: str) -> dict[str, Any]:
    return {
        "name": "calls a tool",
        "model": {"provider": "openai", "name": "tool-lookup_order"},
        "tools": [
            {
                "type": "webhook",
                "name": "lookup_order",
                "description": "Look an order up by id",
                "parameters": {"type": "object", "properties": {"id": {"type": "string"}}},
                "url": url,
            }
        ],
    }


CODEC_TOKEN = "codec-operator-token-0123456789abcdef"


async def test_the_codec_endpoint_round_trips_with_the_operator_codec_token(
    make_settings: Any, serve_api: Any
) -> None:
    payload = {"metadata": {"encoding": b64(b"json/plain")}, "data": b64(b'"hello codec"')}
    settings = make_settings(PARLEY_PAYLOAD_KEYS=KEYS, PARLEY_CODEC_TOKEN=CODEC_TOKEN)
    async with serve_api(settings) as url:
        async with httpx.AsyncClient(base_url=url) as anonymous:
            refused = await anonymous.post("/codec/decode", json={"payloads": [payload]})
        async with httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {CODEC_TOKEN}"}
        ) as operator:
            encoded = (await operator.post("/codec/encode", json={"payloads": [payload]})).json()
            decoded = (await operator.post("/codec/decode", json=encoded)).json()
            garbage = await operator.post("/codec/decode", json={"payloads": "nope"})

    [sealed] = encoded["payloads"]
    assert refused.status_code == 401
    assert base64.b64decode(sealed["metadata"]["encoding"]) == b"binary/encrypted"
    assert b"hello codec" not in base64.b64decode(sealed["data"])
    assert decoded == {"payloads": [payload]}
    assert garbage.status_code == 422


async def test_an_account_api_key_cannot_decode_payloads(
    make_settings: Any, serve_api: Any, api_key: str
) -> None:
    # Any tenant's key would otherwise open every tenant's history: a decryption oracle.
    settings = make_settings(PARLEY_PAYLOAD_KEYS=KEYS, PARLEY_CODEC_TOKEN=CODEC_TOKEN)
    async with serve_api(settings) as url:
        async with httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {CODEC_TOKEN}"}
        ) as operator:
            encoded = (
                await operator.post(
                    "/codec/encode",
                    json={
                        "payloads": [
                            {
                                "metadata": {"encoding": b64(b"json/plain")},
                                "data": b64(b'"tenant data"'),
                            }
                        ]
                    },
                )
            ).json()
        async with httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {api_key}"}
        ) as tenant:
            decoded = await tenant.post("/codec/decode", json=encoded)
            encode = await tenant.post("/codec/encode", json={"payloads": []})

    assert decoded.status_code == 401 and encode.status_code == 401
    assert "tenant data" not in decoded.text and b64(b'"tenant data"') not in decoded.text
    assert set(decoded.json()["error"]) == {"code", "message", "details"}


async def test_without_a_codec_token_the_codec_is_off(
    make_settings: Any, serve_api: Any, api_key: str
) -> None:
    async with serve_api(make_settings(PARLEY_PAYLOAD_KEYS=KEYS)) as url:
        async with httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {api_key}"}
        ) as http:
            response = await http.post("/codec/decode", json={"payloads": []})

    assert response.status_code == 401
    assert "PARLEY_CODEC_TOKEN" in response.json()["error"]["message"]


def test_no_codec_credential_is_refused_on_a_host_other_than_loopback(
    make_settings: Any,
) -> None:
    with pytest.raises(ValueError, match="loopback"):
        make_settings(PARLEY_CODEC_AUTH="none", PARLEY_HOST="0.0.0.0")
    assert make_settings(PARLEY_CODEC_AUTH="none", PARLEY_HOST="127.0.0.1").codec_auth == "none"


def sealed(data: bytes, key_id: bytes = b"t1") -> dict[str, Any]:
    metadata = {"encoding": b64(b"binary/encrypted"), "encryption-key-id": b64(key_id)}
    return {"payloads": [{"metadata": metadata, "data": b64(data)}]}


@pytest.mark.parametrize(
    "body",
    [
        None,
        5,
        "payloads",
        [],
        {"payloads": [5]},
        sealed(b"short"),  # under AES-GCM's minimum nonce
        sealed(b"x" * 20),  # a nonce but no room for the tag
        sealed(b"x" * 40, key_id=b"\xff\xfe"),  # a key id that is not text
        sealed(b"x" * 40, key_id=b"unknown"),
        sealed(b"x" * 40),  # fails authentication
    ],
)
async def test_bad_codec_requests_are_422_in_the_error_shape(
    make_settings: Any, serve_api: Any, body: Any
) -> None:
    settings = make_settings(PARLEY_PAYLOAD_KEYS=KEYS, PARLEY_CODEC_TOKEN=CODEC_TOKEN)
    async with serve_api(settings) as url, httpx.AsyncClient(base_url=url) as operator:
        response = await operator.post(
            "/codec/decode",
            content=json.dumps(body),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {CODEC_TOKEN}"},
        )

    assert response.status_code == 422, response.text
    assert set(response.json()["error"]) == {"code", "message", "details"}


async def test_the_temporal_ui_may_call_the_codec_endpoint_cross_origin(
    make_settings: Any, serve_api: Any
) -> None:
    ui = "http://127.0.0.1:8233"
    settings = make_settings(
        PARLEY_PAYLOAD_KEYS=KEYS, PARLEY_CODEC_AUTH="none", PARLEY_CODEC_CORS_ORIGINS=ui
    )
    async with serve_api(settings) as url, httpx.AsyncClient(base_url=url) as browser:
        preflight = await browser.options(
            "/codec/decode",
            headers={
                "Origin": ui,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type,x-namespace",
            },
        )
        call = await browser.post("/codec/decode", json={"payloads": []}, headers={"Origin": ui})

    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ui
    assert call.status_code == 200 and call.headers["access-control-allow-origin"] == ui


async def test_cors_headers_are_sent_for_the_codec_only(
    make_settings: Any, serve_api: Any, api_key: str
) -> None:
    ui = "http://127.0.0.1:8233"
    settings = make_settings(
        PARLEY_PAYLOAD_KEYS=KEYS, PARLEY_CODEC_TOKEN=CODEC_TOKEN, PARLEY_CODEC_CORS_ORIGINS=ui
    )
    preflight_headers = {
        "Origin": ui,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    async with serve_api(settings) as url, httpx.AsyncClient(base_url=url) as browser:
        codec_preflight = await browser.options("/codec/decode", headers=preflight_headers)
        api_preflight = await browser.options("/api/v1/chats", headers=preflight_headers)
        api_call = await browser.get(
            "/api/v1/agents", headers={"Origin": ui, "Authorization": f"Bearer {api_key}"}
        )

    assert codec_preflight.headers["access-control-allow-origin"] == ui
    assert api_call.status_code == 200
    for response in (api_preflight, api_call):
        assert not [h for h in response.headers if h.startswith("access-control-")], response
