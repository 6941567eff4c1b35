"""`/api/v1/agents`: agent configurations."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status

from src.api.deps import AccountId, ServicesDep
from src.api.schemas import (
    AgentList,
    AgentResponse,
    CreateAgentRequest,
    ErrorResponse,
    UpdateAgentRequest,
)
from src.services.agents import AgentRecord

router = APIRouter(
    prefix="/agents",
    tags=["agents"],
    responses={401: {"model": ErrorResponse}, 422: {"model": ErrorResponse}},
)


def agent_response(agent: AgentRecord) -> AgentResponse:
    masked = agent.spec.masked().model_dump(mode="json")
    return AgentResponse.model_validate(
        {**masked, "id": agent.id, "version": agent.version, "created_time": agent.created_time}
    )


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_agent(
    body: CreateAgentRequest, account: AccountId, services: ServicesDep
) -> AgentResponse:
    return agent_response(await services.agents.create(account, body))


@router.get("")
async def list_agents(
    account: AccountId,
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> AgentList:
    items, next_cursor = await services.agents.list(account, limit, cursor)
    return AgentList(items=[agent_response(a) for a in items], next_cursor=next_cursor)


@router.get("/{agent_id}", responses={404: {"model": ErrorResponse}})
async def get_agent(
    agent_id: str,
    account: AccountId,
    services: ServicesDep,
    # Bounded like the database's version column, so a huge number is a 422, not a 500.
    version: Annotated[
        int | None, Query(ge=1, le=2**31 - 1, description="An older version")
    ] = None,
) -> AgentResponse:
    return agent_response(await services.agents.get(account, agent_id, version))


@router.patch(
    "/{agent_id}", responses={404: {"model": ErrorResponse}, 409: {"model": ErrorResponse}}
)
async def update_agent(
    agent_id: str, body: UpdateAgentRequest, account: AccountId, services: ServicesDep
) -> AgentResponse:
    """Change top-level fields; the result is a new version (earlier ones stay readable)."""
    return agent_response(await services.agents.update(account, agent_id, body))


@router.delete(
    "/{agent_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={404: {"model": ErrorResponse}},
)
async def delete_agent(
    agent_id: str,
    account: AccountId,
    services: ServicesDep,
    purge: Annotated[
        bool,
        Query(
            description="Also erase its secrets (webhook secret, tool header values) from "
            "every version and from the snapshots no active session runs on"
        ),
    ] = False,
) -> None:
    """Soft delete: the agent disappears; sessions opened with it keep their snapshot."""
    await services.agents.delete(account, agent_id, purge=purge)
