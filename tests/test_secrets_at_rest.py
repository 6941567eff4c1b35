"""Tenant secrets (webhook signing secrets, tool and MCP header values, phone numbers' auth
tokens) are sealed in the database: agent versions and snapshots hold ciphertext, sessions
still use the real values, keys rotate, and a purge erases them."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from src.config import Settings
from src.db.snapshots import SnapshotStore
from src.db.tables import PhoneNumber
from src.domain import AgentSpec, CompletionWebhook, SquadMember, SquadSpec, WebhookTool
from src.sealing.secret_box import SecretBox, SecretUnreadable
from src.sealing.secret_storage import reseal_stored_secrets
from src.sealing.state_envelope import new_key_setting, parse_keys
from src.services.accounts import new_api_key, register_api_key
from src.services.agents import AgentService
from src.services.phone_numbers import NewPhoneNumber, PhoneNumberService, TwilioCredentials
from src.services.squads import SquadService
from src.sms.phone_numbers import config_of_row
from src.tools.signing import verify
from tests.conftest import AgentFactory, SettingsFactory
from tests.fakes.tool_server import FakeToolServer
from tests.sessions import open_chat, say, stored_session

ORDER_SCHEMA = {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]}


def secret(kind: str) -> str:
    return f"{kind}-{uuid.uuid4().hex}"


def lookup_tool(url: str, api_key: str) -> dict[str, Any]:
    return {
        "type": "webhook",
        "name": "lookup_order",
        "parameters": ORDER_SCHEMA,
        "url": url,
        "headers": {"X-Api-Key": api_key},
    }


async def raw_version_specs(db: async_sessionmaker[AsyncSession], agent_id: str) -> list[str]:
    async with db() as s:
        rows = await s.execute(
            text("SELECT spec FROM agent_versions WHERE id = :id ORDER BY version"),
            {"id": agent_id},
        )
        return [value if isinstance(value, str) else json.dumps(value) for (value,) in rows]


async def raw_snapshot_config(db: async_sessionmaker[AsyncSession], snapshot_id: str) -> str:
    async with db() as s:
        value = await s.scalar(
            text("SELECT config FROM agent_snapshots WHERE id = :id"), {"id": snapshot_id}
        )
    assert value is not None
    return value if isinstance(value, str) else json.dumps(value)


async def test_agent_versions_and_snapshots_hold_no_secret_in_clear_and_sessions_use_them(
    http: httpx.AsyncClient,
    make_agent: AgentFactory,
    tools: tuple[FakeToolServer, str],
    db: async_sessionmaker[AsyncSession],
) -> None:
    server, base = tools
    signing, previous, header, mcp_header = (
        secret(kind) for kind in ("whsec", "whsec-old", "tool", "mcp")
    )
    mcp = {
        "type": "mcp",
        "server": {"url": "http://127.0.0.1:9/mcp", "headers": {"Authorization": mcp_header}},
    }
    webhook = {"url": "http://127.0.0.1:9/done", "secret": signing, "previous_secrets": [previous]}
    agent_id = await make_agent(
        model="tool-lookup_order",
        tools=[lookup_tool(f"{base}/echo", header), mcp],
        webhook=webhook,
    )
    # Version 2 without the MCP server (nothing answers at its URL), for the session.
    patched = await http.patch(
        f"/agents/{agent_id}", json={"tools": [lookup_tool(f"{base}/echo", header)]}
    )
    session = await open_chat(http, agent_id)
    order = f"A-{uuid.uuid4().hex[:8]}"
    await say(http, session["id"], json.dumps({"id": order}))
    row = await stored_session(db, session["id"])

    versions = await raw_version_specs(db, agent_id)
    snapshot = await raw_snapshot_config(db, row.snapshot_id)
    assert patched.status_code == 200 and len(versions) == 2
    for stored in [*versions, snapshot]:
        for value in (signing, previous, header, mcp_header):
            assert value not in stored
        assert '"sealed"' in stored
    [call] = [c for c in server.calls_to("/echo") if c.json() == {"id": order}]
    assert call.headers["x-api-key"] == header
    assert verify(signing, {k.title(): v for k, v in call.headers.items()}, call.body)


def agent_service(settings: Settings, db: async_sessionmaker[AsyncSession]) -> AgentService:
    return AgentService(settings, db, SnapshotStore(db, SecretBox(settings.secret_keys())))


async def test_secrets_sealed_with_an_old_key_still_open_when_a_new_key_is_put_first(
    make_settings: SettingsFactory, db: async_sessionmaker[AsyncSession]
) -> None:
    account = f"rotate-{uuid.uuid4().hex[:8]}"
    await register_api_key(db, new_api_key(), account_id=account)
    old, new = new_key_setting("old1"), new_key_setting("new1")
    signing = secret("whsec")
    spec = AgentSpec(
        name="rotating",
        tools=[WebhookTool(name="t", url="http://127.0.0.1:9/t", headers={"X-Key": "hdr-1"})],
        webhook=CompletionWebhook(url="http://127.0.0.1:9/done", secret=signing),
    )
    before = agent_service(make_settings(PARLEY_SECRET_KEYS=old), db)
    created = await before.create(account, spec)

    after = agent_service(make_settings(PARLEY_SECRET_KEYS=f"{new},{old}"), db)
    read = await after.get(account, created.id)
    resealed, unreadable = await after.reseal(account)
    only_new = agent_service(make_settings(PARLEY_SECRET_KEYS=new), db)
    [stored] = await raw_version_specs(db, created.id)

    assert read.spec.webhook is not None and read.spec.webhook.secret == signing
    assert isinstance(read.spec.tools[0], WebhookTool)
    assert read.spec.tools[0].headers == {"X-Key": "hdr-1"}
    assert (resealed, unreadable) == (1, 0)
    assert "v1.new1." in stored and "v1.old1." not in stored
    assert (await only_new.get(account, created.id)).spec == spec


async def test_reseal_secrets_reseals_phone_numbers_auth_tokens_and_those_in_clear(
    make_settings: SettingsFactory, db: async_sessionmaker[AsyncSession]
) -> None:
    account = f"rotate-numbers-{uuid.uuid4().hex[:8]}"
    await register_api_key(db, new_api_key(), account_id=account)
    old, new = new_key_setting("old2"), new_key_setting("new2")
    before_settings = make_settings(PARLEY_SECRET_KEYS=old)
    before = agent_service(before_settings, db)
    agent = await before.create(account, AgentSpec(name="texting"))
    sealed_token, clear_token = secret("twilio"), secret("twilio")
    squads = SquadService(db, before, SecretBox(before_settings.secret_keys()))
    sealed = await PhoneNumberService(before_settings, db, before, squads).create(
        account,
        NewPhoneNumber(
            number=f"+1555{uuid.uuid4().int % 10**7:07d}",
            provider="twilio",
            agent_id=agent.id,
            twilio=TwilioCredentials(account_sid="AC" + "0" * 32, auth_token=sealed_token),
        ),
    )
    in_clear = PhoneNumber(  # a row written before tokens were sealed
        id=f"pn_{uuid.uuid4().hex}",
        account_id=account,
        number=f"+1556{uuid.uuid4().int % 10**7:07d}",
        provider="twilio",
        agent_id=agent.id,
        config={"account_sid": "AC" + "1" * 32, "auth_token": clear_token},
        created_time=agent.created_time,
        updated_time=agent.created_time,
    )
    async with db.begin() as s:
        s.add(in_clear)

    report = await reseal_stored_secrets(
        make_settings(PARLEY_SECRET_KEYS=f"{new},{old}"), account_id=account
    )
    only_new = SecretBox(parse_keys(new))
    async with db() as s:
        rows = [await s.get(PhoneNumber, row_id) for row_id in (sealed.id, in_clear.id)]

    assert report == "2 row(s) resealed with key 'new2'"
    for row, token in zip(rows, (sealed_token, clear_token), strict=True):
        assert row is not None
        assert only_new.key_of(row.config["auth_token"]) == "new2"
        assert config_of_row(row, only_new).auth_token == token


def test_a_secret_sealed_with_a_key_the_server_lacks_is_refused_by_key_id() -> None:
    sealed = SecretBox(parse_keys(new_key_setting("gone1"))).seal("value")
    other = SecretBox(parse_keys(new_key_setting("here1")))

    try:
        other.open(sealed)
    except SecretUnreadable as error:
        assert "gone1" in str(error) and "value" not in str(error)
    else:
        raise AssertionError("opened with the wrong key")


async def wait_for_status(
    db: async_sessionmaker[AsyncSession], session_id: str, status: str
) -> None:
    for _ in range(300):  # the finish pipeline persists the final state within moments
        if (await stored_session(db, session_id)).status == status:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"session {session_id} never became {status}")


async def test_purge_erases_secrets_from_every_version_and_unused_snapshots_only(
    http: httpx.AsyncClient,
    make_agent: AgentFactory,
    make_settings: SettingsFactory,
    tools: tuple[FakeToolServer, str],
    db: async_sessionmaker[AsyncSession],
) -> None:
    server, base = tools
    signing, first_header, second_header = secret("whsec"), secret("tool"), secret("tool")
    webhook = {"url": "http://127.0.0.1:9/done", "secret": signing}
    agent_id = await make_agent(
        model="tool-lookup_order",
        tools=[lookup_tool(f"{base}/echo", first_header)],
        webhook=webhook,
    )
    finished = await open_chat(http, agent_id)
    ended = await http.post(f"/chats/{finished['id']}/end")
    await wait_for_status(db, finished["id"], "final")
    await http.patch(
        f"/agents/{agent_id}", json={"tools": [lookup_tool(f"{base}/echo", second_header)]}
    )
    active = await open_chat(http, agent_id)

    purged = await http.delete(f"/agents/{agent_id}", params={"purge": "true"})
    order = f"B-{uuid.uuid4().hex[:8]}"
    turn = await say(http, active["id"], json.dumps({"id": order}))

    finished_snapshot = (await stored_session(db, finished["id"])).snapshot_id
    active_snapshot = (await stored_session(db, active["id"])).snapshot_id
    settings = make_settings()
    kept = await SnapshotStore(db, SecretBox(settings.secret_keys())).load(active_snapshot)
    erased = await raw_snapshot_config(db, finished_snapshot)
    versions = await raw_version_specs(db, agent_id)

    assert ended.status_code == 200 and purged.status_code == 204
    assert turn["messages"][-1]["content"].startswith("tool said:")
    [call] = [c for c in server.calls_to("/echo") if c.json() == {"id": order}]
    assert call.headers["x-api-key"] == second_header
    assert verify(signing, {k.title(): v for k, v in call.headers.items()}, call.body)
    assert kept.spec.webhook is not None and kept.spec.webhook.secret == signing
    assert '"sealed"' not in erased and '"webhook": null' in erased.replace('":null', '": null')
    assert len(versions) == 2
    for stored in versions:
        assert '"sealed"' not in stored
    assert (await http.get(f"/agents/{agent_id}")).status_code == 404


async def test_an_agent_deleted_without_purge_can_be_purged_later(
    http: httpx.AsyncClient,
    other_http: httpx.AsyncClient,
    make_agent: AgentFactory,
    db: async_sessionmaker[AsyncSession],
) -> None:
    signing = secret("whsec")
    agent_id = await make_agent(webhook={"url": "http://127.0.0.1:9/done", "secret": signing})
    deleted = await http.delete(f"/agents/{agent_id}")

    foreign = await other_http.delete(f"/agents/{agent_id}", params={"purge": "true"})
    purged = await http.delete(f"/agents/{agent_id}", params={"purge": "true"})
    unknown = await http.delete("/agents/agent-nope", params={"purge": "true"})

    assert (deleted.status_code, purged.status_code) == (204, 204)
    assert foreign.status_code == 404 and unknown.status_code == 404
    [stored] = await raw_version_specs(db, agent_id)
    assert '"sealed"' not in stored and '"webhook": null' in stored.replace('":null', '": null')


async def test_a_squads_inline_member_secrets_are_sealed_and_resealed(
    make_settings: SettingsFactory, db: async_sessionmaker[AsyncSession]
) -> None:
    account = f"rotate-squads-{uuid.uuid4().hex[:8]}"
    await register_api_key(db, new_api_key(), account_id=account)
    old, new = new_key_setting("old3"), new_key_setting("new3")
    signing = secret("whsec")
    before_settings = make_settings(PARLEY_SECRET_KEYS=old)
    agents = agent_service(before_settings, db)
    squads = SquadService(db, agents, SecretBox(before_settings.secret_keys()))
    inline = AgentSpec(
        name="inline member",
        webhook=CompletionWebhook(url="http://127.0.0.1:9/done", secret=signing),
    )
    created = await squads.create(
        account, SquadSpec(name="s", members=[SquadMember(name="only", agent=inline)])
    )

    async def raw() -> str:
        async with db() as s:
            value = await s.scalar(
                text("SELECT spec FROM squad_versions WHERE id = :id"), {"id": created.id}
            )
        return value if isinstance(value, str) else json.dumps(value)

    sealed = await raw()
    report = await reseal_stored_secrets(
        make_settings(PARLEY_SECRET_KEYS=f"{new},{old}"), account_id=account
    )
    resealed = await raw()
    only_new = SquadService(db, agents, SecretBox(parse_keys(new)))

    assert signing not in sealed and "v1.old3." in sealed
    assert report == "1 row(s) resealed with key 'new3'"
    assert "v1.new3." in resealed and "v1.old3." not in resealed
    read = await only_new.get(account, created.id)
    assert read.spec.members[0].agent == inline
