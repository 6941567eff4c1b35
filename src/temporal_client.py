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


async def connect_temporal(settings: Settings, runtime: Runtime | None = None) -> Client:
    tls: TLSConfig | bool = settings.temporal_tls
    if settings.temporal_tls_cert and settings.temporal_tls_key:
        tls = TLSConfig(
            client_cert=settings.temporal_tls_cert.read_bytes(),
            client_private_key=settings.temporal_tls_key.read_bytes(),
        )
    return await Client.connect(
        settings.temporal_target,
        namespace=settings.temporal_namespace,
        data_converter=data_converter(settings),
        tls=tls,
        api_key=settings.temporal_api_key.get_secret_value() if settings.temporal_api_key else None,
        interceptors=[*tracing_interceptors(settings), LogContextInterceptor()],
        runtime=runtime,
    )
