"""One plugin carries what clients, workers and replay of Parley's workflows agree on: the
converter, interceptors, the workflow list and the sandbox settings."""

from __future__ import annotations

import uuid

import pytest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from src.sealing.payload_codec import EncryptionCodec
from src.sealing.state_envelope import new_key_setting
from src.temporal.client import (
    WORKFLOW_RUNNER,
    carries_parley_plugin,
    connect_temporal,
    parley_plugin,
)
from src.worker import running_worker
from src.workflows.registry import WORKFLOWS
from tests.conftest import SettingsFactory

# the Temporal client and worker only: the PostgreSQL pass would only run it again.
pytestmark = pytest.mark.database_agnostic


async def test_connect_temporal_gives_the_client_the_plugin_and_its_workers_inherit_it(
    make_settings: SettingsFactory,
) -> None:
    settings = make_settings(
        TEMPORAL_TASK_QUEUE=f"plugin-{uuid.uuid4().hex[:8]}",
        PARLEY_PAYLOAD_KEYS=new_key_setting("p1"),
    )
    client = await connect_temporal(settings)

    async with running_worker(settings, client) as worker:
        config = worker.config(active_config=True)

    assert carries_parley_plugin(client)
    assert isinstance(client.data_converter.payload_codec, EncryptionCodec)
    assert list(config.get("workflows", [])) == list(WORKFLOWS)
    assert config.get("workflow_runner") is WORKFLOW_RUNNER


async def test_a_worker_on_a_client_made_elsewhere_gets_the_same_workflows_and_sandbox(
    temporal_client: Client, make_settings: SettingsFactory
) -> None:
    # A queue of its own: the suite's worker polls the default one on this client.
    settings = make_settings(TEMPORAL_TASK_QUEUE=f"plugin-{uuid.uuid4().hex[:8]}")
    assert not carries_parley_plugin(temporal_client)

    async with running_worker(settings, temporal_client) as worker:
        config = worker.config(active_config=True)

    assert list(config.get("workflows", [])) == list(WORKFLOWS)
    assert config.get("workflow_runner") is WORKFLOW_RUNNER


def test_a_caller_s_own_workflow_list_is_kept_not_doubled() -> None:
    plugin = parley_plugin(pydantic_data_converter)
    own = [WORKFLOWS[0]]

    assert callable(plugin.workflows)
    assert plugin.workflows(own) == own
    assert plugin.workflows(None) == list(WORKFLOWS)
