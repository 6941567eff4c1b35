"""`POST /channels/twilio/sms`: the texts Twilio forwards to a phone number (the number's "A
message comes in" webhook). No Parley key: the request is Twilio's, signed with the number's
auth token. The answer is TwiML at once; the agent's reply goes out later as a text."""

from __future__ import annotations

from xml.sax.saxutils import escape

from fastapi import APIRouter, Request, Response

from src.api.deps import ServicesDep
from src.api.schemas import ErrorResponse
from src.domain import Attachment
from src.errors import Forbidden, InvalidInput, NotFound
from src.sms.channel import InboundText
from src.sms.signatures import SIGNATURE_HEADER, is_signed, public_url_of

router = APIRouter(prefix="/channels/twilio", tags=["channels"])

TWIML = "application/xml"
# Twilio posts at most 10 media per message.
_MAX_MEDIA = 10


@router.post(
    "/sms",
    response_class=Response,
    responses={
        200: {"content": {TWIML: {}}, "description": "TwiML: empty, or the HELP text"},
        403: {"model": ErrorResponse},
        404: {"model": ErrorResponse},
        422: {"model": ErrorResponse},
    },
)
async def receive_text(request: Request, services: ServicesDep) -> Response:
    params = await twilio_form(request)
    number = await services.sms.number(params.get("To", ""))
    if number is None:
        raise NotFound(f"phone number {params.get('To', '')!r} is not registered in Parley")
    check_signature(request, params, number.auth_token, services.settings.public_url)
    reply = await services.sms.take(number, inbound_text(params))
    return twiml(reply)


async def twilio_form(request: Request) -> dict[str, str]:
    """The posted form (application/x-www-form-urlencoded), every field a string."""
    if request.headers.get("content-type", "").split(";")[0].strip() != (
        "application/x-www-form-urlencoded"
    ):
        raise InvalidInput("Twilio posts application/x-www-form-urlencoded forms")
    form = await request.form()
    return {key: value for key, value in form.multi_items() if isinstance(value, str)}


def check_signature(
    request: Request, params: dict[str, str], auth_token: str, public_base: str
) -> None:
    """403 unless X-Twilio-Signature signs the public URL and every posted parameter."""
    url = public_url_of(public_base, request.url.path, request.url.query)
    signature = request.headers.get(SIGNATURE_HEADER, "")
    if not is_signed(auth_token, url, params, signature):
        raise Forbidden(
            f"missing or wrong {SIGNATURE_HEADER}: the request must be Twilio's, signed over "
            f"{url} (PARLEY_PUBLIC_URL) with the number's auth token"
        )


def inbound_text(params: dict[str, str]) -> InboundText:
    missing = [name for name in ("MessageSid", "From") if not params.get(name)]
    if missing:
        raise InvalidInput(f"the form lacks {', '.join(missing)}")
    try:
        media = min(int(params.get("NumMedia") or 0), _MAX_MEDIA)
    except ValueError:
        raise InvalidInput("NumMedia must be a number") from None
    attachments = [
        Attachment(url=params[f"MediaUrl{i}"], content_type=params.get(f"MediaContentType{i}"))
        for i in range(media)
        if params.get(f"MediaUrl{i}")
    ]
    return InboundText(
        message_sid=params["MessageSid"],
        sender=params["From"],
        number=params["To"],
        body=params.get("Body", ""),
        attachments=attachments,
    )


def twiml(message: str | None) -> Response:
    """`<Response/>`, or a reply texted back at once."""
    body = f"<Message>{escape(message)}</Message>" if message else ""
    return Response(
        f'<?xml version="1.0" encoding="UTF-8"?><Response>{body}</Response>', media_type=TWIML
    )
