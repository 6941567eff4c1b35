"""What a publishable widget key may do, checked once per request before its body is read:
which routes (the widget's few), from which origins (the key's), how often (per visitor and
per client IP), and as which visitor (the sealed `X-Parley-Visitor` token).

A visitor token is `pv_` + a state-key-sealed (src/sealing/state_envelope.py, AES-256-GCM)
JSON object naming the widget key and a random visitor id: unforgeable, bound to the key, and
rotated with PARLEY_STATE_KEYS. The visitor's web session lives on the endpoint
`{"widget_key": <key id>, "visitor": <visitor id>}`, so every tab of one browser joins it."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Any

from cachetools import LRUCache
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from src.config import Settings
from src.db.tables import ChatSession
from src.errors import Forbidden, NotFound, RateLimited, Unauthorized
from src.sealing.state_envelope import StateRejected, StateSealer
from src.services.rate_limits import RequestRateLimiter
from src.session_ids import endpoint_hash
from src.widget.keys import WidgetGrant, WidgetKeyService
from src.widget.origins import origin_allowed

VISITOR_HEADER = "X-Parley-Visitor"
VISITOR_TOKEN_PREFIX = "pv_"
WIDGET_CHANNEL = "web"
_TOKEN_KIND = "widget_visitor"

# (method, path) a `pw_` key may call; everything else is 403 for it. The stream route is the
# owner's (issue 9/13); it is listed so that it works with a widget key the day it exists.
_WIDGET_ROUTES = [
    ("POST", re.compile(r"^/api/v1/widget/sessions$")),
    ("GET", re.compile(r"^/api/v1/chats/[^/]+$")),
    ("POST", re.compile(r"^/api/v1/chats/[^/]+/messages$")),
    ("GET", re.compile(r"^/api/v1/chats/[^/]+/stream$")),
]
_OPEN_ROUTE = "/api/v1/widget/sessions"


def is_widget_route(method: str, path: str) -> bool:
    return any(method == allowed and route.match(path) for allowed, route in _WIDGET_ROUTES)


def is_widget_path(path: str) -> bool:
    """Whether some method of `path` is open to widget keys (for CORS preflights)."""
    return any(route.match(path) for _, route in _WIDGET_ROUTES)


@dataclass(frozen=True)
class WidgetScope:
    """A request made with a `pw_` key: its key, agent and (but on open) its visitor."""

    key_id: str
    agent_id: str
    visitor_id: str | None

    def external_id(self, visitor_id: str) -> dict[str, Any]:
        return {"widget_key": self.key_id, "visitor": visitor_id}


@dataclass(frozen=True)
class Principal:
    """Who is calling: an account, through its secret API key (`widget` None) or through one
    of its publishable widget keys."""

    account_id: str
    widget: WidgetScope | None = None

    def visitor_endpoint(self) -> str | None:
        """The endpoint hash of the widget visitor's web sessions; None for a secret key."""
        if self.widget is None or self.widget.visitor_id is None:
            return None
        external_id = self.widget.external_id(self.widget.visitor_id)
        return endpoint_hash(self.account_id, WIDGET_CHANNEL, external_id)


class VisitorTokens:
    def __init__(self, sealer: StateSealer) -> None:
        self._sealer = sealer

    def issue(self, key_id: str) -> tuple[str, str]:
        """A new visitor of the widget key: (visitor id, token)."""
        visitor_id = secrets.token_urlsafe(18)
        sealed = self._sealer.seal(
            {"kind": _TOKEN_KIND, "widget_key": key_id, "visitor": visitor_id}
        )
        return visitor_id, VISITOR_TOKEN_PREFIX + sealed

    def visitor_of(self, token: str, key_id: str) -> str:
        """The visitor id a token carries; 401 when it is forged, damaged or another key's."""
        refusal = Unauthorized(
            "the visitor token is not valid for this widget key: open a session without one "
            "to get a new token"
        )
        if not token.startswith(VISITOR_TOKEN_PREFIX) or len(token) > 1000:
            raise refusal
        try:
            claims = self._sealer.open(token.removeprefix(VISITOR_TOKEN_PREFIX))
        except (StateRejected, ValueError):
            raise refusal from None
        visitor = claims.get("visitor")
        if claims.get("kind") != _TOKEN_KIND or claims.get("widget_key") != key_id:
            raise refusal
        if not isinstance(visitor, str) or not visitor:
            raise refusal
        return visitor


class WidgetGate:
    """Admits or refuses a request made with a `pw_` key (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
        keys: WidgetKeyService,
    ) -> None:
        self.keys = keys
        self._sessions = sessions
        # (session id, visitor endpoint) pairs found to match: a session's endpoint never
        # changes, so a visitor's turns cost no database read after the first.
        self._owned: LRUCache[tuple[str, str], bool] = LRUCache(100_000)
        self.tokens = VisitorTokens(StateSealer(settings.state_keys()))
        self._per_visitor = settings.widget_rate_per_visitor_per_minute
        self._per_ip = settings.widget_rate_per_ip_per_minute
        self._visitor_limiter = RequestRateLimiter(self._per_visitor)
        self._ip_limiter = RequestRateLimiter(self._per_ip)

    async def grant_from(self, key: str, method: str, path: str, origin: str | None) -> WidgetGrant:
        """The key's grant, if it may call this route from this origin (401, 403)."""
        grant = await self.keys.grant_for(key)
        if not is_widget_route(method, path):
            raise Forbidden(
                "a publishable widget key (pw_...) may only open widget sessions and read, "
                "message and stream its visitor's own session; use a secret API key for "
                f"{method} {path}"
            )
        if not origin_allowed(origin, grant.origins):
            shown = "no Origin header" if not origin else f"origin {origin!r}"
            raise Forbidden(
                f"this widget key does not allow {shown}: add the page's origin to the key's "
                "allowed_origins",
                {"origin": origin},
            )
        return grant

    async def principal(
        self, grant: WidgetGrant, path: str, client_ip: str | None, visitor_token: str | None
    ) -> Principal:
        """The caller of a granted request, counted against the client IP's rate and (but on
        open, whose token is in the body) the visitor's (429); 401 for a bad token."""
        if client_ip is not None:
            await self._count(self._ip_limiter, f"ip:{client_ip}", self._per_ip, "IP address")
        visitor_id = None
        if path != _OPEN_ROUTE:
            if not visitor_token:
                raise Unauthorized(
                    f"a widget key needs the visitor token in the {VISITOR_HEADER} header, as "
                    "POST /api/v1/widget/sessions returned it"
                )
            visitor_id = await self.visitor(grant.key_id, visitor_token)
        scope = WidgetScope(key_id=grant.key_id, agent_id=grant.agent_id, visitor_id=visitor_id)
        return Principal(account_id=grant.account_id, widget=scope)

    async def visitor(self, key_id: str, token: str) -> str:
        """The visitor a token names (401 if it is not this key's), counted against its rate."""
        visitor_id = self.tokens.visitor_of(token, key_id)
        rate_key = f"visitor:{key_id}:{visitor_id}"
        await self._count(self._visitor_limiter, rate_key, self._per_visitor, "visitor")
        return visitor_id

    async def check_session(self, principal: Principal, session_id: str) -> None:
        """Nothing for a secret key; for a widget key, NotFound unless the session is its
        visitor's web session (as for another account's session: nothing is revealed)."""
        if principal.widget is None:
            return
        endpoint = principal.visitor_endpoint()
        if endpoint is not None and (session_id, endpoint) in self._owned:
            return
        async with self._sessions() as db:
            owner = await db.scalar(
                select(ChatSession.endpoint_hash).where(
                    ChatSession.id == session_id,
                    ChatSession.account_id == principal.account_id,
                )
            )
        if endpoint is None or owner != endpoint:
            raise NotFound(f"chat session {session_id!r} not found")
        self._owned[(session_id, endpoint)] = True

    @staticmethod
    async def _count(limiter: RequestRateLimiter, key: str, limit: int, per: str) -> None:
        retry_after = await limiter.retry_after(key)
        if retry_after is not None:
            raise RateLimited(
                f"more than {limit} widget requests a minute from this {per}; "
                f"retry in {retry_after} s",
                {"limit_per_minute": limit, "retry_after_seconds": retry_after},
            )
