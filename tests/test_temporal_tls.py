"""TEMPORAL_TLS_* reach a cluster that requires mTLS: a TLS front on loopback, with its own
CA, that asks for a client certificate and forwards to the dev server (as a cluster's
TLS-terminating frontend would). Settings → connect_temporal, nothing stubbed."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from temporalio.testing import WorkflowEnvironment

from src.temporal.client import connect_temporal
from tests.conftest import SettingsFactory

# Temporal's TLS only: the PostgreSQL pass would only run it again.
pytestmark = pytest.mark.database_agnostic

SERVER_NAME = "temporal.cluster.test"


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _issue(
    subject: str,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    *,
    server: bool = False,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer[0].subject if issuer else _name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if issuer is not None:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if server:
        names: list[x509.GeneralName] = [
            x509.DNSName(SERVER_NAME),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    signer = issuer[1] if issuer else key
    return builder.sign(signer, hashes.SHA256()), key


def _write(
    directory: Path, name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> tuple[Path, Path]:
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@asynccontextmanager
async def mtls_front(directory: Path, upstream: str) -> AsyncIterator[tuple[str, Path, Path, Path]]:
    """A TLS listener on loopback requiring a client certificate from its CA, piping each
    connection to `upstream`. Yields (address, CA file, client cert file, client key file)."""
    ca = _issue("Parley test CA", None)
    server_cert, server_key = _issue(SERVER_NAME, ca, server=True)
    client_cert, client_key = _issue("parley-worker", ca)
    ca_path, _ = _write(directory, "ca", *ca)
    server_paths = _write(directory, "server", server_cert, server_key)
    client_paths = _write(directory, "client", client_cert, client_key)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(ca_path))
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_cert_chain(*map(str, server_paths))
    context.set_alpn_protocols(["h2"])
    upstream_host, _, upstream_port = upstream.rpartition(":")

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(upstream_host, int(upstream_port))
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"127.0.0.1:{port}", ca_path, *client_paths
    finally:
        server.close()


async def test_a_client_certificate_from_the_settings_gets_through_an_mtls_frontend(
    tmp_path: Path, make_settings: SettingsFactory, temporal_env: WorkflowEnvironment
) -> None:
    upstream = temporal_env.client.service_client.config.target_host
    async with mtls_front(tmp_path, upstream) as (address, ca, cert, key):
        settings = make_settings(
            TEMPORAL_ADDRESS=address,
            TEMPORAL_TLS_CA=ca,
            TEMPORAL_TLS_SERVER_NAME=SERVER_NAME,
            TEMPORAL_TLS_CERT=cert,
            TEMPORAL_TLS_KEY=key,
        )
        client = await connect_temporal(settings)
        listed = [w async for w in client.list_workflows(limit=1)]

    assert isinstance(listed, list)


async def test_without_a_client_certificate_the_mtls_frontend_refuses(
    tmp_path: Path, make_settings: SettingsFactory, temporal_env: WorkflowEnvironment
) -> None:
    upstream = temporal_env.client.service_client.config.target_host
    async with mtls_front(tmp_path, upstream) as (address, ca, _, _):
        settings = make_settings(
            TEMPORAL_ADDRESS=address, TEMPORAL_TLS_CA=ca, TEMPORAL_TLS_SERVER_NAME=SERVER_NAME
        )
        with pytest.raises(RuntimeError):
            await connect_temporal(settings)


def test_half_a_client_certificate_is_refused_at_startup(
    tmp_path: Path, make_settings: SettingsFactory
) -> None:
    with pytest.raises(ValueError, match="TEMPORAL_TLS_CERT and TEMPORAL_TLS_KEY"):
        make_settings(TEMPORAL_TLS_CERT=tmp_path / "client.pem")
