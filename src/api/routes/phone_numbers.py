"""`/api/v1/phone-numbers`: the numbers an account's texts reach Parley on (secret API key
only), with the Twilio credentials they send with, the auth token masked in every answer."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, status

from src.api.deps import AccountId, ServicesDep
from src.api.schemas import (
    CreatePhoneNumberRequest,
    ErrorResponse,
    PhoneNumberList,
    PhoneNumberResponse,
    UpdatePhoneNumberRequest,
)
from src.services.phone_numbers import PhoneNumberRecord

router = APIRouter(
    prefix="/phone-numbers",
    tags=["sms"],
    responses={401: {"model": ErrorResponse}, 403: {"model": ErrorResponse}},
)


# Refused before the database sees it: PostgreSQL cannot compare a NUL character.
NumberId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="e.g. pn_...")]


def phone_number_response(record: PhoneNumberRecord) -> PhoneNumberResponse:
    return PhoneNumberResponse.model_validate(record.model_dump())


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses={
        404: {"model": ErrorResponse},
        409: {"model": ErrorResponse},
        422: {"model": ErrorResponse},
    },
)
async def create_phone_number(
    body: CreatePhoneNumberRequest, account: AccountId, services: ServicesDep
) -> PhoneNumberResponse:
    """Registers a number for one of the account's agents. Paste `webhook_url` into the
    number's messaging configuration in Twilio's console."""
    return phone_number_response(await services.phone_numbers.create(account, body))


@router.get("")
async def list_phone_numbers(
    account: AccountId,
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> PhoneNumberList:
    items, next_cursor = await services.phone_numbers.list(account, limit, cursor)
    return PhoneNumberList(
        items=[phone_number_response(item) for item in items], next_cursor=next_cursor
    )


@router.get("/{number_id}", responses={404: {"model": ErrorResponse}})
async def get_phone_number(
    number_id: NumberId, account: AccountId, services: ServicesDep
) -> PhoneNumberResponse:
    return phone_number_response(await services.phone_numbers.get(account, number_id))


@router.patch(
    "/{number_id}", responses={404: {"model": ErrorResponse}, 422: {"model": ErrorResponse}}
)
async def update_phone_number(
    number_id: NumberId, body: UpdatePhoneNumberRequest, account: AccountId, services: ServicesDep
) -> PhoneNumberResponse:
    """Changes the agent, the Twilio credentials (the whole object; the auth token omitted or
    masked keeps the stored one), `ttl_seconds` or `help_text` (null clears those two)."""
    return phone_number_response(await services.phone_numbers.update(account, number_id, body))


@router.delete(
    "/{number_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={404: {"model": ErrorResponse}},
)
async def delete_phone_number(
    number_id: NumberId, account: AccountId, services: ServicesDep
) -> None:
    """The number stops answering texts; it may then be registered again, by any account."""
    await services.phone_numbers.delete(account, number_id)
