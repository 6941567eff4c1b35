"""`/codec/encode`, `/codec/decode`: the remote codec the Temporal UI and CLI call
(`--ui-codec-endpoint`, `temporal workflow show --codec-endpoint`), so operators read plain
text while Temporal stores ciphertext. Payloads use Temporal's JSON form:
`{"payloads": [{"metadata": {"encoding": "<base64>"}, "data": "<base64>"}]}`."""

from __future__ import annotations

import hmac
from typing import Any

from fastapi import APIRouter, Depends, Request
from google.protobuf import json_format
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send
from temporalio.api.common.v1 import Payloads

from src.api.deps import ServicesDep
from src.errors import InvalidInput, Unauthorized
from src.sealing.payload_codec import EncryptionCodec, PayloadDecryptionError

router = APIRouter(prefix="/codec", tags=["codec"])


async def codec_caller(request: Request, services: ServicesDep) -> None:
    """The operator credential PARLEY_CODEC_TOKEN as a Bearer token, unless
    PARLEY_CODEC_AUTH=none (loopback hosts only, e.g. the dev stack). Never an account's API
    key: the codec opens every tenant's payloads."""
    settings = services.settings
    if settings.codec_auth == "none":
        return
    if settings.codec_token is None:
        raise Unauthorized("the codec is off: the server has no PARLEY_CODEC_TOKEN")
    scheme, _, offered = (request.headers.get("authorization") or "").partition(" ")
    expected = settings.codec_token.get_secret_value().encode()
    if scheme.lower() != "bearer" or not hmac.compare_digest(offered.strip().encode(), expected):
        raise Unauthorized("the codec needs the operator codec token (PARLEY_CODEC_TOKEN)")


class CodecOnlyCORS:
    """CORS for the Temporal UI's origin on /codec and nowhere else: the tenant API is not
    for browsers of another origin."""

    def __init__(self, app: ASGIApp, origins: list[str]) -> None:
        self._app = app
        self._cors = CORSMiddleware(
            app,
            allow_origins=origins,
            allow_methods=["POST"],
            allow_headers=["Authorization", "Content-Type", "X-Namespace"],
            allow_credentials=True,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path == router.prefix or path.startswith(f"{router.prefix}/"):
            await self._cors(scope, receive, send)
        else:
            await self._app(scope, receive, send)


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
