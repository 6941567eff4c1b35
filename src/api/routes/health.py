"""`GET /health`: can the API reach Temporal and the database? No auth."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from src.api.deps import ServicesDep
from src.api.errors import error_response

router = APIRouter(tags=["health"])


@router.get("/health")
async def health(services: ServicesDep) -> JSONResponse:
    problems: dict[str, str] = {}
    try:
        await asyncio.wait_for(services.temporal.service_client.check_health(), timeout=5)
    except Exception as error:
        problems["temporal"] = type(error).__name__
    try:
        async with services.engine.connect() as connection:
            await asyncio.wait_for(connection.execute(text("SELECT 1")), timeout=5)
    except Exception as error:
        problems["database"] = type(error).__name__
    if problems:
        return error_response(503, "unavailable", "a dependency is unreachable", problems)
    return JSONResponse({"status": "ok", "temporal": "ok", "database": "ok"})
