"""Phone numbers: registered for an account's agent with Twilio credentials, the auth token
sealed in the database and masked in every answer; one number, one account."""

from __future__ import annotations

import json
import secrets
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from src.config import Settings
from src.db.tables import PhoneNumber
from src.domain import SECRET_MASK
from src.sealing.secret_box import SecretBox
from src.services.accounts import new_api_key, register_api_key
from src.sms.phone_numbers import config_of_row
from tests.conftest import AgentFactory, api_client
from tests.stack import Stack
from tests.test_api_errors import assert_error
from tests.test_quotas import AGENT
from tests.test_widget_keys import create_key, widget

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
OTHER_ACCOUNT_SID = "AC" + "fedcba9876543210" * 2
MESSAGING_SERVICE_SID = "MG" + "89abcdef01234567" * 2


def new_number() -> str:
    """A number no other test registers: +1 555 and 7 random digits."""
    return f"+1555{secrets.randbelow(10**7):07d}"


def auth_token() -> str:
    return secrets.token_hex(16)


def registration(agent_id: str, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "number": new_number(),
        "provider": "twilio",
        "agent_id": agent_id,
        "twilio": {"account_sid": ACCOUNT_SID, "auth_token": auth_token()},
    }
    body.update(fields)
    return body


async def register(http: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    response = await http.post("/phone-numbers", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def stored_row(db: async_sessionmaker[AsyncSession], number_id: str) -> PhoneNumber:
    async with db() as s:
        row = await s.get(PhoneNumber, number_id)
    assert row is not None
    return row


async def stored_config(db: async_sessionmaker[AsyncSession], number_id: str) -> dict[str, Any]:
    """The `config` column as the database holds it, read without the ORM."""
    async with db() as s:
        value = await s.scalar(
            text("SELECT config FROM phone_numbers WHERE id = :id"), {"id": number_id}
        )
    assert value is not None
    return dict(json.loads(value) if isinstance(value, str) else value)


async def stored_token(
    db: async_sessionmaker[AsyncSession], settings: Settings, number_id: str
) -> str:
    return config_of_row(
        await stored_row(db, number_id), SecretBox(settings.secret_keys())
    ).auth_token


@pytest.fixture
async def agent_id(make_agent: AgentFactory) -> str:
    return await make_agent()


async def test_a_number_is_registered_read_listed_changed_and_deleted(
    http: httpx.AsyncClient, make_agent: AgentFactory, agent_id: str, settings: Settings
) -> None:
    other_agent = await make_agent()
    body = registration(agent_id, ttl_seconds=600, help_text="Acme: reply STOP to opt out.")
    body["twilio"]["messaging_service_sid"] = MESSAGING_SERVICE_SID
    created = await register(http, body)
    read = await http.get(f"/phone-numbers/{created['id']}")
    listed = (await http.get("/phone-numbers", params={"limit": 100})).json()
    patched = await http.patch(
        f"/phone-numbers/{created['id']}", json={"agent_id": other_agent, "ttl_seconds": 900}
    )
    deleted = await http.delete(f"/phone-numbers/{created['id']}")
    after = await http.get(f"/phone-numbers/{created['id']}")
    listed_after = (await http.get("/phone-numbers", params={"limit": 100})).json()

    assert created["id"].startswith("pn_")
    assert {k: created[k] for k in ("number", "provider", "agent_id")} == {
        "number": body["number"],
        "provider": "twilio",
        "agent_id": agent_id,
    }
    assert created["twilio"] == {
        "account_sid": ACCOUNT_SID,
        "auth_token": SECRET_MASK,
        "messaging_service_sid": MESSAGING_SERVICE_SID,
    }
    assert (created["ttl_seconds"], created["help_text"]) == (600, body["help_text"])
    assert created["created_time"] == created["updated_time"]
    assert created["webhook_url"] == f"{settings.public_url}/channels/twilio/sms"
    assert created["status_callback_url"] == f"{settings.public_url}/channels/twilio/status"
    assert read.status_code == 200 and read.json() == created
    assert created in listed["items"]
    assert patched.status_code == 200, patched.text
    assert patched.json() == {
        **created,
        "agent_id": other_agent,
        "ttl_seconds": 900,
        "updated_time": patched.json()["updated_time"],
    }
    assert patched.json()["updated_time"] > created["updated_time"]
    assert deleted.status_code == 204
    assert_error(after, 404, "not_found")
    assert created["id"] not in [item["id"] for item in listed_after["items"]]


async def test_the_auth_token_is_sealed_in_the_database_and_opens_to_the_original(
    http: httpx.AsyncClient,
    agent_id: str,
    db: async_sessionmaker[AsyncSession],
    settings: Settings,
) -> None:
    body = registration(agent_id)
    created = await register(http, body)

    config = await stored_config(db, created["id"])
    token = body["twilio"]["auth_token"]
    assert set(config) == {"account_sid", "auth_token", "messaging_service_sid"}
    assert isinstance(config["auth_token"], dict) and set(config["auth_token"]) == {"sealed"}
    assert token not in json.dumps(config)
    assert SecretBox(settings.secret_keys()).open(config["auth_token"]) == token
    assert config["account_sid"] == ACCOUNT_SID and config["messaging_service_sid"] is None


async def test_a_patch_keeps_the_stored_token_unless_it_sends_a_new_one(
    http: httpx.AsyncClient,
    agent_id: str,
    db: async_sessionmaker[AsyncSession],
    settings: Settings,
) -> None:
    body = registration(agent_id)
    created = await register(http, body)
    url = f"/phone-numbers/{created['id']}"
    original, replacement = body["twilio"]["auth_token"], auth_token()

    omitted = await http.patch(url, json={"twilio": {"account_sid": ACCOUNT_SID}})
    after_omitted = await stored_token(db, settings, created["id"])
    masked = await http.patch(
        url,
        json={
            "twilio": {
                "account_sid": ACCOUNT_SID,
                "auth_token": SECRET_MASK,
                "messaging_service_sid": MESSAGING_SERVICE_SID,
            }
        },
    )
    after_masked = await stored_token(db, settings, created["id"])
    replaced = await http.patch(
        url,
        json={"twilio": {"account_sid": OTHER_ACCOUNT_SID, "auth_token": replacement}},
    )
    config = await stored_config(db, created["id"])

    assert omitted.status_code == 200, omitted.text
    assert after_omitted == original
    assert masked.status_code == 200, masked.text
    assert masked.json()["twilio"] == {
        "account_sid": ACCOUNT_SID,
        "auth_token": SECRET_MASK,
        "messaging_service_sid": MESSAGING_SERVICE_SID,
    }
    assert after_masked == original
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["twilio"] == {
        "account_sid": OTHER_ACCOUNT_SID,
        "auth_token": SECRET_MASK,
        "messaging_service_sid": None,
    }
    assert SecretBox(settings.secret_keys()).open(config["auth_token"]) == replacement
    assert replacement not in json.dumps(config)


async def test_a_new_account_sid_without_its_token_is_refused(
    http: httpx.AsyncClient, agent_id: str
) -> None:
    created = await register(http, registration(agent_id))

    response = await http.patch(
        f"/phone-numbers/{created['id']}", json={"twilio": {"account_sid": OTHER_ACCOUNT_SID}}
    )

    error = assert_error(response, 422, "invalid_input")
    assert "auth_token" in error["message"]
    assert (await http.get(f"/phone-numbers/{created['id']}")).json() == created


async def test_null_clears_the_help_text_and_the_ttl(
    http: httpx.AsyncClient, agent_id: str
) -> None:
    created = await register(http, registration(agent_id, ttl_seconds=120, help_text="Help!"))

    response = await http.patch(
        f"/phone-numbers/{created['id']}", json={"ttl_seconds": None, "help_text": None}
    )

    assert response.status_code == 200, response.text
    assert (response.json()["ttl_seconds"], response.json()["help_text"]) == (None, None)
    assert response.json()["agent_id"] == agent_id


async def test_numbers_are_listed_newest_first_in_keyset_pages(
    api_url: str, db: async_sessionmaker[AsyncSession]
) -> None:
    key = new_api_key()
    await register_api_key(db, key, account_id=f"numbers-pages-{uuid.uuid4().hex[:8]}")
    async with api_client(api_url, key) as http:
        agent_id = (await http.post("/agents", json=AGENT)).json()["id"]
        made = [(await register(http, registration(agent_id)))["id"] for _ in range(3)]
        first = (await http.get("/phone-numbers", params={"limit": 2})).json()
        second = (
            await http.get("/phone-numbers", params={"limit": 2, "cursor": first["next_cursor"]})
        ).json()
        bad_cursor = await http.get("/phone-numbers", params={"cursor": "not-a-cursor"})

    assert [item["id"] for item in first["items"] + second["items"]] == made[::-1]
    assert all(item["twilio"]["auth_token"] == SECRET_MASK for item in first["items"])
    assert second["next_cursor"] is None
    assert_error(bad_cursor, 422, "invalid_input")


async def test_another_accounts_number_is_404_on_every_route(
    http: httpx.AsyncClient, other_http: httpx.AsyncClient, agent_id: str
) -> None:
    created = await register(http, registration(agent_id))
    url = f"/phone-numbers/{created['id']}"

    read = await other_http.get(url)
    listed = (await other_http.get("/phone-numbers", params={"limit": 100})).json()
    patched = await other_http.patch(url, json={"help_text": "mine now"})
    deleted = await other_http.delete(url)

    assert_error(read, 404, "not_found")
    assert created["id"] not in [item["id"] for item in listed["items"]]
    assert_error(patched, 404, "not_found")
    assert_error(deleted, 404, "not_found")
    assert (await http.get(url)).json() == created


async def test_a_number_registered_by_any_account_is_409_without_saying_whose(
    http: httpx.AsyncClient,
    other_http: httpx.AsyncClient,
    agent_id: str,
    make_agent: AgentFactory,
) -> None:
    body = registration(agent_id)
    created = await register(http, body)
    other_agent = await make_agent(client=other_http)

    again = await http.post("/phone-numbers", json=registration(agent_id, number=body["number"]))
    other = await other_http.post(
        "/phone-numbers", json=registration(other_agent, number=body["number"])
    )

    for response in (again, other):
        error = assert_error(response, 409, "conflict")
        assert error["message"] == "this number is already registered"
        assert error["details"] is None
        assert created["id"] not in response.text and created["agent_id"] not in response.text


async def test_a_deleted_number_can_be_registered_again(
    http: httpx.AsyncClient, other_http: httpx.AsyncClient, agent_id: str, make_agent: AgentFactory
) -> None:
    body = registration(agent_id)
    created = await register(http, body)
    await http.delete(f"/phone-numbers/{created['id']}")

    again = await register(
        other_http, registration(await make_agent(client=other_http), number=body["number"])
    )

    assert again["number"] == body["number"] and again["id"] != created["id"]


async def test_an_unknown_or_another_accounts_agent_is_404(
    http: httpx.AsyncClient, other_http: httpx.AsyncClient, agent_id: str
) -> None:
    created = await register(http, registration(agent_id))

    unknown = await http.post("/phone-numbers", json=registration("agent-does-not-exist"))
    foreign = await other_http.post("/phone-numbers", json=registration(agent_id))
    patched = await http.patch(
        f"/phone-numbers/{created['id']}", json={"agent_id": "agent-does-not-exist"}
    )

    for response in (unknown, foreign, patched):
        error = assert_error(response, 404, "not_found")
        assert "agent" in error["message"]
    assert (await http.get(f"/phone-numbers/{created['id']}")).json()["agent_id"] == agent_id


def twilio_with(**fields: Any) -> dict[str, Any]:
    return {"twilio": {"account_sid": ACCOUNT_SID, "auth_token": "tok", **fields}}


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"number": "15550001111"}, "E.164"),
        ({"number": "+05550001111"}, "E.164"),
        ({"number": "+1 555 000 1111"}, "E.164"),
        ({"number": "+12345"}, "E.164"),
        ({"number": "+1234567890123456"}, "E.164"),
        ({"provider": "vonage"}, "provider"),
        ({"provider": None}, "provider"),
        (twilio_with(account_sid="AC123"), "Account SID"),
        (twilio_with(account_sid="MG" + "0" * 32), "Account SID"),
        (twilio_with(account_sid="AC" + "g" * 32), "Account SID"),
        (twilio_with(messaging_service_sid="MG123"), "Messaging Service SID"),
        (twilio_with(messaging_service_sid="AC" + "0" * 32), "Messaging Service SID"),
        (twilio_with(auth_token=""), "auth token is empty"),
        (twilio_with(auth_token="x" * 257), "longer than 256"),
        (twilio_with(auth_token=SECRET_MASK), "masked value"),
        (twilio_with(auth_token="tok\x00en"), "NUL"),
        ({"twilio": {"account_sid": ACCOUNT_SID}}, "twilio.auth_token"),
        ({"twilio": None}, "twilio"),
        ({"ttl_seconds": 0}, "ttl_seconds must be between"),
        ({"ttl_seconds": 86_401}, "ttl_seconds must be between"),
        ({"help_text": "x" * 1601}, "1,600"),
        ({"help_text": "help\x00"}, "NUL"),
        ({"help_text": "   "}, "blank"),
        ({"agent_id": ""}, "agent_id"),
        ({"extra": 1}, "extra"),
    ],
)
async def test_bad_registrations_are_422_with_a_clear_message(
    http: httpx.AsyncClient, agent_id: str, fields: dict[str, Any], named: str
) -> None:
    response = await http.post("/phone-numbers", json={**registration(agent_id), **fields})

    error = assert_error(response, 422, "invalid_input")
    assert named in error["message"]


@pytest.mark.parametrize(
    ("patch", "named"),
    [
        ({"number": "+15550001111"}, "number cannot be changed"),
        ({"provider": "twilio"}, "provider cannot be changed"),
        ({"agent_id": None}, "agent_id cannot be null"),
        ({"twilio": None}, "twilio cannot be null"),
        ({"twilio": {"auth_token": "tok"}}, "twilio.account_sid"),
        ({"twilio": {"account_sid": "AC1", "auth_token": "tok"}}, "Account SID"),
        ({"twilio": {"account_sid": ACCOUNT_SID, "auth_token": ""}}, "auth token is empty"),
        ({"ttl_seconds": 0}, "ttl_seconds must be between"),
        ({"help_text": "x" * 1601}, "1,600"),
        ({"help_text": "\x00"}, "NUL"),
    ],
)
async def test_bad_patches_are_422_and_change_nothing(
    http: httpx.AsyncClient, agent_id: str, patch: dict[str, Any], named: str
) -> None:
    created = await register(http, registration(agent_id))

    response = await http.patch(f"/phone-numbers/{created['id']}", json=patch)

    error = assert_error(response, 422, "invalid_input")
    assert named in error["message"]
    assert (await http.get(f"/phone-numbers/{created['id']}")).json() == created


async def test_the_webhook_urls_are_under_parley_public_url(stack: Stack, agent_id: str) -> None:
    settings = stack.make_settings(PARLEY_PUBLIC_URL="https://sms.example.com/parley/")

    async with stack.api(settings) as http:
        created = await register(http, registration(agent_id))
        read = (await http.get(f"/phone-numbers/{created['id']}")).json()

    assert created["webhook_url"] == "https://sms.example.com/parley/channels/twilio/sms"
    assert created["status_callback_url"] == "https://sms.example.com/parley/channels/twilio/status"
    assert read["webhook_url"] == created["webhook_url"]


async def test_a_widget_key_cannot_manage_phone_numbers(
    api_url: str, http: httpx.AsyncClient, agent_id: str
) -> None:
    key = await create_key(http, agent_id)
    async with widget(api_url, key["key"]) as page:
        responses = [
            await page.get("/phone-numbers"),
            await page.post("/phone-numbers", json=registration(agent_id)),
        ]

    for response in responses:
        assert_error(response, 403, "forbidden")


@pytest.mark.parametrize(("number_id", "says"), [("pn_a%00b", "NUL"), ("x" * 65, "number_id")])
async def test_an_id_no_number_can_have_is_422_on_every_route(
    http: httpx.AsyncClient, number_id: str, says: str
) -> None:
    url = f"/phone-numbers/{number_id}"
    responses = [
        await http.get(url),
        await http.patch(url, json={"help_text": "hi"}),
        await http.delete(url),
    ]

    for response in responses:
        error = assert_error(response, 422, "invalid_input")
        assert says in error["message"]


async def test_a_number_answered_by_a_squad_and_moved_back_to_an_agent(
    http: httpx.AsyncClient, other_http: httpx.AsyncClient, make_agent: AgentFactory, agent_id: str
) -> None:
    squad = await http.post(
        "/squads", json={"name": "desk", "members": [{"name": "one", "agent_id": agent_id}]}
    )
    squad_id = squad.json()["id"]
    others_agent = await make_agent(client=other_http)
    others_squad = await other_http.post(
        "/squads", json={"name": "x", "members": [{"name": "one", "agent_id": others_agent}]}
    )

    def for_squad(squad: str) -> dict[str, Any]:
        body = registration(agent_id, squad_id=squad)
        del body["agent_id"]
        return body

    number = await register(http, for_squad(squad_id))
    both = await http.post("/phone-numbers", json=registration(agent_id, squad_id=squad_id))
    neither = await http.post(
        "/phone-numbers", json={k: v for k, v in for_squad(squad_id).items() if k != "squad_id"}
    )
    foreign = await http.post("/phone-numbers", json=for_squad(others_squad.json()["id"]))
    moved = await http.patch(f"/phone-numbers/{number['id']}", json={"agent_id": agent_id})

    assert (number["agent_id"], number["squad_id"]) == (None, squad_id)
    assert (
        "exactly one of `agent_id` or `squad_id`"
        in assert_error(both, 422, "invalid_input")["message"]
    )
    assert_error(neither, 422, "invalid_input")
    assert_error(foreign, 404, "not_found")
    assert moved.status_code == 200, moved.text
    assert (moved.json()["agent_id"], moved.json()["squad_id"]) == (agent_id, None)
