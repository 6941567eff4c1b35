"""Connecting to Temporal the same way from the API, the worker and the CLI."""

from __future__ import annotations

import dataclasses

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter, DefaultFailureConverterWithEncodedAttributes
from temporalio.runtime import Runtime
from temporalio.service import TLSConfig

from src.config import Settings
from src.observability import LogContextInterceptor, tracing_interceptors
from src.payload_codec import EncryptionCodec


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


async def connect_temporal(settings: Settings, runtime: Runtime | None = None) -> Client:
    return await Client.connect(
        settings.temporal_target,
        namespace=settings.temporal_namespace,
        data_converter=data_converter(settings),
        tls=tls_config(settings),
        api_key=settings.temporal_api_key.get_secret_value() if settings.temporal_api_key else None,
        interceptors=[*tracing_interceptors(settings), LogContextInterceptor()],
        runtime=runtime,
    )
