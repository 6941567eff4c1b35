"""`POST /channels/twilio/status`: Twilio's delivery status callbacks for the texts Parley
sent (the Messages API's `StatusCallback`, or the number's status callback URL). No Parley
key: the request is Twilio's, signed with the auth token of the number the text came from."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from src.api.deps import ServicesDep
from src.api.routes.twilio_sms import TWIML, check_signature, twilio_form, twiml
from src.api.schemas import ErrorResponse
from src.errors import InvalidInput, NotFound
from src.sms.delivery import STATUS_RANK
from src.sms.status_callbacks import StatusCallback

router = APIRouter(prefix="/channels/twilio", tags=["channels"])


@router.post(
    "/status",
    response_class=Response,
    responses={
        200: {"content": {TWIML: {}}, "description": "empty TwiML: the status is recorded"},
        403: {"model": ErrorResponse},
        404: {"model": ErrorResponse},
        422: {"model": ErrorResponse},
    },
)
async def receive_status(request: Request, services: ServicesDep) -> Response:
    params = await twilio_form(request)
    message_sid = params.get("MessageSid", "")
    text, number = await services.sms_status.find(message_sid, params.get("From", ""))
    if number is None:
        raise NotFound(
            f"phone number {params.get('From', '')!r} is not registered in Parley, and no "
            f"text Parley sent has MessageSid {message_sid!r}"
        )
    check_signature(request, params, number.auth_token, services.settings.public_url)
    callback = status_callback(params)
    if text is None:
        # Perhaps a text whose send has not been recorded yet: the send activity takes the
        # status from here when it records the text (src/activities/sms.py).
        await services.sms_status.keep_early(callback)
        raise NotFound(f"no text Parley sent has MessageSid {message_sid!r} (yet)")
    await services.sms_status.take(text, callback)
    return twiml(None)


def status_callback(params: dict[str, str]) -> StatusCallback:
    if not params.get("MessageSid"):
        raise InvalidInput("the form lacks MessageSid")
    status = params.get("MessageStatus") or params.get("SmsStatus") or ""
    if status not in STATUS_RANK:
        raise InvalidInput(
            f"MessageStatus {status!r} is not one of Twilio's message statuses: "
            + ", ".join(STATUS_RANK)
        )
    return StatusCallback(
        message_sid=params["MessageSid"],
        status=status,
        error_code=params.get("ErrorCode") or None,
        error_message=params.get("ErrorMessage") or None,
    )
