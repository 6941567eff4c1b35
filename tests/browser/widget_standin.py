"""A stand-in for Parley's widget front (publishable widget keys, visitor tokens and their
CORS), built on branch h/keys: until it is merged, the widget's browser tests talk to this
loopback proxy, which answers `POST /api/v1/widget/sessions` by opening a chat on the real API
with an account key, and passes the chat routes and `/widget.js` through to the real API.

It keeps the contract's shape (the widget key as Bearer, `X-Parley-Visitor`, one visitor's
chats under `external_id: {"visitor": token}`, origins allowed per widget key) and nothing of
its security: it is test plumbing, never a model for the real front.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

ALLOWED_HEADERS = "authorization, content-type, idempotency-key, last-event-id, x-parley-visitor"


@dataclass
class WidgetKey:
    agent_id: str
    origins: list[str]


@dataclass
class WidgetStandIn:
    api_url: str
    api_key: str
    keys: dict[str, WidgetKey] = field(default_factory=dict)
    base_url: str = ""  # where it is served, once it is

    def add_key(self, agent_id: str, origins: list[str]) -> str:
        key = f"pw_test_{uuid.uuid4().hex}"
        self.keys[key] = WidgetKey(agent_id, origins)
        return key

    @property
    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/widget.js", self._script),
                Route("/api/v1/widget/sessions", self._open, methods=["POST", "OPTIONS"]),
                Route("/api/v1/chats/{id}/messages", self._forward, methods=["POST", "OPTIONS"]),
                Route("/api/v1/chats/{id}/stream", self._forward, methods=["GET", "OPTIONS"]),
            ]
        )

    async def _script(self, request: Request) -> Response:
        async with httpx.AsyncClient() as client:
            answer = await client.get(f"{self.api_url}/widget.js")
        return Response(answer.content, answer.status_code, media_type="text/javascript")

    def _admit(self, request: Request) -> tuple[WidgetKey | None, Response | None]:
        origin = request.headers.get("origin", "")
        cors = {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
        token = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        widget_key = self.keys.get(token)
        if request.method == "OPTIONS":
            return None, Response(
                status_code=204,
                headers={
                    **cors,
                    "Access-Control-Allow-Methods": "GET, POST",
                    "Access-Control-Allow-Headers": ALLOWED_HEADERS,
                },
            )
        if widget_key is None:
            return None, _error(401, "unauthorized", "unknown widget key", cors)
        if origin not in widget_key.origins:
            return None, _error(
                403, "origin_not_allowed", f"the origin {origin} may not use this key", cors
            )
        return widget_key, None

    async def _open(self, request: Request) -> Response:
        widget_key, refusal = self._admit(request)
        if refusal is not None:
            return refusal
        assert widget_key is not None
        body = await request.json()
        visitor = body.get("visitor_token") or uuid.uuid4().hex
        async with httpx.AsyncClient(timeout=60) as client:
            opened = await client.post(
                f"{self.api_url}/api/v1/chats",
                headers={"Authorization": f"Bearer {self.api_key}"},
                json={
                    "agent_id": widget_key.agent_id,
                    "channel": "web",
                    "external_id": {"visitor": visitor},
                },
            )
        headers = {"Access-Control-Allow-Origin": request.headers.get("origin", "")}
        if opened.status_code not in (200, 201):
            return Response(opened.content, opened.status_code, headers=headers)
        return JSONResponse({"visitor_token": visitor, "session": opened.json()}, 200, headers)

    async def _forward(self, request: Request) -> Response:
        _, refusal = self._admit(request)
        if refusal is not None:
            return refusal
        headers = {
            name: value
            for name, value in request.headers.items()
            if name in ("accept", "content-type", "idempotency-key", "last-event-id")
        }
        headers["authorization"] = f"Bearer {self.api_key}"
        client = httpx.AsyncClient(timeout=None)
        upstream = client.build_request(
            request.method,
            f"{self.api_url}{request.url.path}",
            params=request.query_params,
            headers=headers,
            content=await request.body(),
        )
        answer = await client.send(upstream, stream=True)

        async def close() -> None:
            await answer.aclose()
            await client.aclose()

        return StreamingResponse(
            _chunks(answer),
            answer.status_code,
            headers={"Access-Control-Allow-Origin": request.headers.get("origin", "")},
            media_type=answer.headers.get("content-type"),
            background=BackgroundTask(close),
        )


async def _chunks(answer: httpx.Response) -> AsyncIterator[bytes]:
    async for chunk in answer.aiter_raw():
        yield chunk


def _error(status: int, code: str, message: str, headers: dict[str, str]) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status, headers)
