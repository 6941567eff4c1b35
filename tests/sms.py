"""Steps the SMS tests share: a phone number for an agent, a text Twilio would post (signed
with the number's auth token over PARLEY_PUBLIC_URL), the session a pair of numbers has."""

from __future__ import annotations

import asyncio
import random
import secrets
import uuid
from typing import Any

import httpx

from src.config import Settings
from src.sms.signatures import SIGNATURE_HEADER, signature_of
from tests.fakes.twilio_server import FakeTwilio

AUTH_TOKEN = "twilio-test-auth-token-0001"


def new_number() -> str:
    """A fresh number in the 555-01xx fiction range's neighbourhood, unique per test."""
    return "+1555" + "".join(random.choices("0123456789", k=7))


def account_sid() -> str:
    return "AC" + secrets.token_hex(16)


async def add_number(
    http: httpx.AsyncClient,
    twilio: FakeTwilio,
    agent_id: str,
    number: str | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """A number for the agent (or, with `squad_id` in `fields` and no agent, the squad), on a
    Twilio account the fake Twilio knows."""
    account = twilio.add_account(account_sid(), AUTH_TOKEN)
    body = {
        "number": number or new_number(),
        "provider": "twilio",
        **({"agent_id": agent_id} if agent_id else {}),
        "twilio": {"account_sid": account.sid, "auth_token": AUTH_TOKEN},
        **fields,
    }
    response = await http.post("/phone-numbers", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


def message_sid() -> str:
    return "SM" + uuid.uuid4().hex


async def text_in(
    api: httpx.AsyncClient,
    settings: Settings,
    sender: str,
    number: str,
    body: str,
    token: str = AUTH_TOKEN,
    signature: str | None = None,
    **extra: str,
) -> httpx.Response:
    """POST /channels/twilio/sms as Twilio would, signed unless `signature` is given."""
    params = {
        "MessageSid": extra.pop("MessageSid", message_sid()),
        "AccountSid": "AC" + "0" * 32,
        "From": sender,
        "To": number,
        "Body": body,
        "NumMedia": "0",
        **extra,
    }
    url = settings.public_url + "/channels/twilio/sms"
    headers = {SIGNATURE_HEADER: signature_of(token, url, params)}
    if signature is not None:
        headers[SIGNATURE_HEADER] = signature
    return await api.post("/channels/twilio/sms", data=params, headers=headers)


def endpoint(sender: str, number: str) -> dict[str, str]:
    return {"from": sender, "to": number, "provider_id": "twilio"}


async def pair_sessions(http: httpx.AsyncClient, agent_id: str) -> list[dict[str, Any]]:
    listed = await http.get("/chats", params={"agent_id": agent_id, "channel": "twilio_sms"})
    assert listed.status_code == 200, listed.text
    return list(listed.json()["items"])


async def transcript_when(
    http: httpx.AsyncClient, session_id: str, count: int, attempts: int = 300
) -> list[dict[str, Any]]:
    """The session's messages once it has `count` of them (bounded polling)."""
    for _ in range(attempts):
        messages = (await http.get(f"/chats/{session_id}")).json()["messages"]
        if len(messages) >= count:
            return list(messages)
        await asyncio.sleep(0.1)
    raise AssertionError(f"session {session_id} never had {count} messages")
