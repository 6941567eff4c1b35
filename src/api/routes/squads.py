"""`/api/v1/squads`: agents that hand a conversation to each other."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status

from src.api.deps import AccountId, ServicesDep
from src.api.schemas import ErrorResponse, SquadList, SquadResponse
from src.domain import SquadPatch, SquadSpec
from src.services.squads import SquadRecord

router = APIRouter(
    prefix="/squads",
    tags=["squads"],
    responses={401: {"model": ErrorResponse}, 422: {"model": ErrorResponse}},
)


def squad_response(squad: SquadRecord) -> SquadResponse:
    return SquadResponse.model_validate(
        {
            **squad.spec.masked().model_dump(mode="json"),
            "id": squad.id,
            "version": squad.version,
            "created_time": squad.created_time,
        }
    )


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_squad(body: SquadSpec, account: AccountId, services: ServicesDep) -> SquadResponse:
    """The first member starts each session; members hand over with a `handoff` tool, whose
    destinations must name other members (422 otherwise, and for an unknown agent)."""
    return squad_response(await services.squads.create(account, body))


@router.get("")
async def list_squads(
    account: AccountId,
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> SquadList:
    items, next_cursor = await services.squads.list(account, limit, cursor)
    return SquadList(items=[squad_response(s) for s in items], next_cursor=next_cursor)


@router.get("/{squad_id}", responses={404: {"model": ErrorResponse}})
async def get_squad(
    squad_id: str,
    account: AccountId,
    services: ServicesDep,
    version: Annotated[
        int | None, Query(ge=1, le=2**31 - 1, description="An older version")
    ] = None,
) -> SquadResponse:
    return squad_response(await services.squads.get(account, squad_id, version))


@router.patch(
    "/{squad_id}", responses={404: {"model": ErrorResponse}, 409: {"model": ErrorResponse}}
)
async def update_squad(
    squad_id: str, body: SquadPatch, account: AccountId, services: ServicesDep
) -> SquadResponse:
    """Change the name or the members; the result is a new version."""
    return squad_response(await services.squads.update(account, squad_id, body))


@router.delete(
    "/{squad_id}", status_code=status.HTTP_204_NO_CONTENT, responses={404: {"model": ErrorResponse}}
)
async def delete_squad(squad_id: str, account: AccountId, services: ServicesDep) -> None:
    """Soft delete: sessions opened with the squad keep the members they froze."""
    await services.squads.delete(account, squad_id)
