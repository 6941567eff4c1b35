"""Connecting to Temporal the same way from the API, the worker, replay and the CLI.

What a client, a worker and a replayer of Parley's workflows must agree on (the data
converter, the interceptors, the workflow list and the sandbox settings) is one
`SimplePlugin`, `parley_plugin`: the client carries it, workers made from that client inherit
it, and replay uses it too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from temporalio.client import Client
from temporalio.client import Interceptor as ClientInterceptor
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter, DefaultFailureConverterWithEncodedAttributes
from temporalio.plugin import SimplePlugin
from temporalio.runtime import Runtime
from temporalio.service import TLSConfig
from temporalio.worker import Interceptor as WorkerInterceptor
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from src.config import Settings
from src.observability import LogContextInterceptor, tracing_interceptors
from src.sealing.payload_codec import EncryptionCodec
from src.workflows.registry import WORKFLOWS

PLUGIN_NAME = "parley"

# Parley's own modules are passed through the workflow sandbox: loaded once, not imported
# again for every workflow run the worker starts: re-importing them per run cost memory for
# every cached session and worker CPU whenever evicted sessions came back (docs/benchmarks.md).
# Workflow code stays deterministic by construction (workflow.now(), uuid4(), no I/O, no
# mutable module state) and the replay tests check it.
WORKFLOW_RUNNER = SandboxedWorkflowRunner(
    restrictions=SandboxRestrictions.default.with_passthrough_modules("src")
)


def data_converter(settings: Settings) -> DataConverter:
    """Pydantic payloads, encrypted when PARLEY_PAYLOAD_KEYS is set, failure messages and
    stack traces too (moved into an encoded attribute). Client, worker and replay all use this
    one, so they read each other's payloads."""
    keys = settings.payload_keys()
    if not keys:
        return pydantic_data_converter
    return dataclasses.replace(
        pydantic_data_converter,
        payload_codec=EncryptionCodec(keys),
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )


def tls_config(settings: Settings) -> TLSConfig | bool:
    """TLS to the Temporal frontend: off, the system's CAs (TEMPORAL_TLS=true), or with a
    private CA, a server name and a client certificate (mTLS) when those are set."""
    cert, key = settings.temporal_tls_cert, settings.temporal_tls_key
    ca, name = settings.temporal_tls_ca, settings.temporal_tls_server_name
    if not (cert or ca or name):
        return settings.temporal_tls
    return TLSConfig(
        server_root_ca_cert=ca.read_bytes() if ca else None,
        domain=name,
        client_cert=cert.read_bytes() if cert else None,
        client_private_key=key.read_bytes() if key else None,
    )


def parley_plugin(
    converter: DataConverter,
    interceptors: Sequence[ClientInterceptor | WorkerInterceptor] = (),
) -> SimplePlugin:
    """The converter and interceptors for clients and replay; the workflows (unless a caller
    gives its own list, as the replay tests do) and the sandbox for workers and replay."""
    return SimplePlugin(
        PLUGIN_NAME,
        data_converter=converter,
        interceptors=[*interceptors, LogContextInterceptor()],
        workflows=lambda given: list(given) if given else list(WORKFLOWS),
        workflow_runner=WORKFLOW_RUNNER,
    )


def settings_plugin(settings: Settings) -> SimplePlugin:
    return parley_plugin(data_converter(settings), tracing_interceptors(settings))


def carries_parley_plugin(client: Client) -> bool:
    return any(
        isinstance(plugin, SimplePlugin) and plugin.name() == PLUGIN_NAME
        for plugin in client.config()["plugins"]
    )


async def connect_temporal(settings: Settings, runtime: Runtime | None = None) -> Client:
    return await Client.connect(
        settings.temporal_target,
        namespace=settings.temporal_namespace,
        tls=tls_config(settings),
        api_key=settings.temporal_api_key.get_secret_value() if settings.temporal_api_key else None,
        plugins=[settings_plugin(settings)],
        runtime=runtime,
    )
