"""`/codec/encode`, `/codec/decode`: the remote codec the Temporal UI and CLI call
(`--ui-codec-endpoint`, `temporal workflow show --codec-endpoint`), so operators read plain
text while Temporal stores ciphertext. Payloads use Temporal's JSON form:
`{"payloads": [{"metadata": {"encoding": "<base64>"}, "data": "<base64>"}]}`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from google.protobuf import json_format
from temporalio.api.common.v1 import Payloads

from src.api.deps import ServicesDep, current_account
from src.errors import InvalidInput
from src.payload_codec import EncryptionCodec, PayloadDecryptionError

router = APIRouter(prefix="/codec", tags=["codec"])


async def codec_caller(request: Request, services: ServicesDep) -> None:
    """An API key, unless PARLEY_CODEC_AUTH=none (the dev stack: loopback only)."""
    if services.settings.codec_auth == "api-key":
        await current_account(request, request.headers.get("authorization"))


async def _payloads(request: Request) -> Payloads:
    expected = "expected {'payloads': [...]} in Temporal's JSON form"
    try:
        body = await request.json()
    except ValueError:
        raise InvalidInput(f"{expected}: the body is not JSON") from None
    if not isinstance(body, dict):
        raise InvalidInput(f"{expected}, not a JSON {type(body).__name__}")
    try:
        return json_format.ParseDict(body, Payloads(), ignore_unknown_fields=True)
    except (ValueError, TypeError, json_format.ParseError) as error:
        raise InvalidInput(f"{expected}: {error}") from None


def _codec(services: Any) -> EncryptionCodec | None:
    keys = services.settings.payload_keys()
    return EncryptionCodec(keys) if keys else None


@router.post("/encode", dependencies=[Depends(codec_caller)])
async def encode(request: Request, services: ServicesDep) -> dict[str, Any]:
    payloads = await _payloads(request)
    codec = _codec(services)
    encoded = await codec.encode(payloads.payloads) if codec else list(payloads.payloads)
    return json_format.MessageToDict(Payloads(payloads=encoded))


@router.post("/decode", dependencies=[Depends(codec_caller)])
async def decode(request: Request, services: ServicesDep) -> dict[str, Any]:
    payloads = await _payloads(request)
    codec = _codec(services)
    try:
        decoded = await codec.decode(payloads.payloads) if codec else list(payloads.payloads)
    except PayloadDecryptionError as error:
        raise InvalidInput(str(error)) from None
    return json_format.MessageToDict(Payloads(payloads=decoded))
