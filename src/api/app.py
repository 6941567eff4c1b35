"""The FastAPI application: services built once at startup and shared by every route."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from src.api import metrics
from src.api.deps import Services
from src.api.errors import OSVI_PREFIX, install_error_handlers
from src.api.front_door import FRONT_DOOR_RESPONSES, KEYED_PREFIX, FrontDoor
from src.api.metrics import RequestMetrics, RequestSpans
from src.api.routes import (
    agents,
    api_docs,
    chats,
    codec,
    console_page,
    front_page,
    health,
    openai_compat,
    osvi_compat,
    phone_numbers,
    squads,
    text_chat,
    twilio_sms,
    twilio_status,
    vapi_compat,
    widget,
    widget_script,
)
from src.compat.osvi import OsviChat
from src.compat.vapi.service import VapiFace
from src.config import Settings
from src.db.engine import create_engine, session_factory
from src.db.snapshots import SnapshotStore
from src.sealing.secret_box import SecretBox
from src.services.accounts import ApiKeyAuthenticator, register_api_key
from src.services.active_sessions import ActiveSessionsCount
from src.services.agents import AgentService
from src.services.chat_sessions import ChatSessionService
from src.services.phone_numbers import PhoneNumberService
from src.services.rate_limits import RequestRateLimiter
from src.services.session_streams import SessionStreams
from src.services.squads import SquadService
from src.services.text_chat import TextChatService
from src.sms.channel import SmsChannel
from src.sms.status_callbacks import DeliveryStatuses
from src.temporal.client import connect_temporal
from src.widget.access import WidgetGate
from src.widget.cors import WidgetCORS
from src.widget.keys import WidgetKeyService


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings.database_url)
        sessions = session_factory(engine)
        if settings.api_key is not None:
            await register_api_key(sessions, settings.api_key.get_secret_value())
        temporal = await connect_temporal(settings)
        # One snapshot cache for every service: a snapshot saved at open is read from it at
        # the next turn.
        snapshots = SnapshotStore(sessions, SecretBox(settings.secret_keys()))
        agent_service = AgentService(settings, sessions, snapshots)
        squad_service = SquadService(sessions, agent_service, SecretBox(settings.secret_keys()))
        widget_keys = WidgetKeyService(sessions, agent_service, settings.api_key_cache_seconds)
        chats = ChatSessionService(
            settings, temporal, sessions, agent_service, snapshots, squad_service
        )
        text_chat = TextChatService(settings, temporal, sessions, agent_service, snapshots)
        streams = SessionStreams(engine, sessions)
        await streams.start()
        app.state.services = Services(
            settings=settings,
            engine=engine,
            temporal=temporal,
            authenticator=ApiKeyAuthenticator(sessions, settings.api_key_cache_seconds),
            rate_limiter=RequestRateLimiter(settings.rate_limit_per_minute),
            active_sessions=ActiveSessionsCount(engine, settings.metrics_cache_seconds),
            agents=agent_service,
            squads=squad_service,
            chats=chats,
            text_chat=text_chat,
            widget_keys=widget_keys,
            widget_gate=WidgetGate(settings, sessions, widget_keys),
            streams=streams,
            phone_numbers=PhoneNumberService(settings, sessions, agent_service, squad_service),
            sms=SmsChannel(sessions, SecretBox(settings.secret_keys()), chats),
            sms_status=DeliveryStatuses(
                settings, sessions, SecretBox(settings.secret_keys()), snapshots, temporal
            ),
            osvi=OsviChat(chats, agent_service, sessions),
            vapi=VapiFace(settings, sessions, chats, text_chat),
        )
        try:
            yield
        finally:
            await streams.close()
            await engine.dispose()

    # FastAPI's own /docs and /redoc load Swagger UI and ReDoc from a CDN: blank pages with no
    # internet. FastAPIOffline serves the copies fastapi-offline ships, and /docs on them;
    # /redoc is Parley's own (api_docs), on the same files.
    app = FastAPIOffline(
        redoc_url=None,
        static_url=api_docs.DOCS_ASSETS_URL,
        title="Parley",
        version="0.1.0",
        description="Self-hostable AI-agent chat sessions on Temporal durable workflows.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    # Innermost of the middlewares: CORS answers preflights before it, metrics count it.
    app.add_middleware(FrontDoor)
    # Answers the preflights of the routes a widget key may call, before the front door asks
    # for a key; adds the CORS headers the front door allowed to their answers.
    app.add_middleware(WidgetCORS)
    if settings.codec_cors_origins:
        # The Temporal UI calls the codec endpoint from the browser, from its own origin.
        app.add_middleware(codec.CodecOnlyCORS, origins=settings.codec_cors_origins)
    app.add_middleware(RequestMetrics)
    if settings.tracing != "off":
        app.add_middleware(RequestSpans)
    app.include_router(front_page.router)
    app.include_router(api_docs.router)
    app.include_router(health.router)
    app.include_router(metrics.router)
    app.include_router(codec.router)
    app.include_router(widget_script.router)
    app.include_router(console_page.router)
    app.include_router(twilio_sms.router)
    app.include_router(twilio_status.router)
    keyed = (
        chats.router,
        agents.router,
        squads.router,
        text_chat.router,
        widget.keys_router,
        widget.sessions_router,
        phone_numbers.router,
    )
    for router in keyed:
        app.include_router(router, prefix=KEYED_PREFIX, responses=FRONT_DOOR_RESPONSES)
    app.include_router(osvi_compat.router, prefix=OSVI_PREFIX)
    app.include_router(openai_compat.router, prefix=KEYED_PREFIX)  # OpenAI's error shape
    app.include_router(vapi_compat.router)
    return app
