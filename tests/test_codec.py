"""Payload encryption: Temporal history holds ciphertext; the codec endpoint reads it back."""

from __future__ import annotations

import base64
import uuid
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from src.state_envelope import new_key_setting
from src.temporal_client import connect_temporal
from src.worker import running_worker
from tests.conftest import AgentFactory, api_client
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


async def test_the_codec_endpoint_round_trips_and_needs_a_key(
    make_settings: Any, serve_api: Any, api_key: str
) -> None:
    payload = {"metadata": {"encoding": b64(b"json/plain")}, "data": b64(b'"hello codec"')}
    async with serve_api(make_settings(PARLEY_PAYLOAD_KEYS=KEYS)) as url:
        async with httpx.AsyncClient(base_url=url) as anonymous:
            refused = await anonymous.post("/codec/decode", json={"payloads": [payload]})
        async with httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {api_key}"}
        ) as http:
            encoded = (await http.post("/codec/encode", json={"payloads": [payload]})).json()
            decoded = (await http.post("/codec/decode", json=encoded)).json()
            garbage = await http.post("/codec/decode", json={"payloads": "nope"})

    [sealed] = encoded["payloads"]
    assert refused.status_code == 401
    assert base64.b64decode(sealed["metadata"]["encoding"]) == b"binary/encrypted"
    assert b"hello codec" not in base64.b64decode(sealed["data"])
    assert decoded == {"payloads": [payload]}
    assert garbage.status_code == 422


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
