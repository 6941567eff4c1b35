"""A fake Twilio on loopback: the subset of the REST API Parley uses (send a message, list
messages) behind HTTP basic auth, answering in Twilio's JSON shapes, and the delivery status
callbacks Twilio posts back, signed with `X-Twilio-Signature`.

  fake = FakeTwilio(); async with served(fake.app) as url: ...  (PARLEY_TWILIO_API_URL=url)
  account = fake.add_account()      an account whose sid and auth token it accepts

Scripting (each takes `to`, a recipient, or None for any send; scripts keyed by recipient keep
tests that share one fake apart):
  fake.fail_next(count, status=429, to=None)
                  the next `count` sends answer 429 (code 20429) or a 5xx (code 20500)
                  without sending anything
  fake.burst_next(statuses, to=None, after=0, retry_after=None, accept_5xx=False)
                  the next sends (once `after` more were accepted) answer `statuses` in turn:
                  a 429 with `Retry-After: <retry_after>` when given, a 5xx (code 20500);
                  with `accept_5xx`, each 5xx is answered after accepting the message (Twilio
                  has it and lists it, the client only sees the error)
  fake.refuse(to, code=21610, status=400)
                  every send to `to` is refused with that Twilio error (21610: the recipient
                  texted STOP to Twilio)
  fake.hang_next(count=1, to=None, after=0)
                  the next `count` sends (once `after` more went through) are accepted
                  (recorded in `messages`, listed, as Twilio would), then the answer is held
                  until `release()` or until the client goes away (a worker SIGKILLed
                  mid-send); `wait_hanging()` waits for one
  await fake.send_status(sid, "delivered", error_code=None)
                  posts the status callback of one message to its StatusCallback, signed with
                  the account's auth token, in whatever order the test calls it

Assertions: `messages` (every accepted message, oldest first), `sent(to=...)`, `wait_sent()`,
and `requests` (every API request with the status it was answered, and when).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import urlencode

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from src.sms.signatures import SIGNATURE_HEADER, signature_of

API_VERSION = "2010-04-01"
MAX_BODY_CHARS = 1600
DEFAULT_PAGE_SIZE = 50

# Twilio's error codes the fake answers with.
AUTHENTICATE = 20003
NOT_FOUND = 20404
TOO_MANY_REQUESTS = 20429
INTERNAL_ERROR = 20500
BODY_REQUIRED = 21602
FROM_REQUIRED = 21603
TO_REQUIRED = 21604
BODY_TOO_LONG = 21617
UNSUBSCRIBED_RECIPIENT = 21610

_MESSAGES = {
    AUTHENTICATE: "Authenticate",
    NOT_FOUND: "The requested resource was not found",
    TOO_MANY_REQUESTS: "Too Many Requests",
    INTERNAL_ERROR: "Internal Server Error",
    BODY_REQUIRED: "Message body is required.",
    FROM_REQUIRED: "A 'From' phone number is required.",
    TO_REQUIRED: "A 'To' phone number is required.",
    BODY_TOO_LONG: "The concatenated message body exceeds the 1600 character limit.",
    UNSUBSCRIBED_RECIPIENT: "Attempt to send to unsubscribed recipient",
}


def new_sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


@dataclass(frozen=True)
class TwilioAccount:
    sid: str
    auth_token: str


@dataclass
class TwilioMessage:
    """A message the fake accepted: Twilio has it, whatever became of the HTTP answer."""

    sid: str
    account_sid: str
    to: str
    from_: str | None  # None when sent through a messaging service (Twilio picks it later)
    messaging_service_sid: str | None
    body: str
    status_callback: str | None
    date_created: datetime
    status: str = "queued"
    error_code: int | None = None
    answered: bool = False  # False while held, or when the client went away first

    def resource(self) -> dict[str, Any]:
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{self.sid}.json"
        created = format_datetime(self.date_created, usegmt=False)
        return {
            "account_sid": self.account_sid,
            "api_version": API_VERSION,
            "body": self.body,
            "date_created": created,
            "date_sent": None if self.status in ("queued", "accepted") else created,
            "date_updated": created,
            "direction": "outbound-api",
            "error_code": self.error_code,
            "error_message": None,
            "from": self.from_,
            "messaging_service_sid": self.messaging_service_sid,
            "num_media": "0",
            "num_segments": str(max(1, -(-len(self.body) // 153))),
            "price": None,
            "price_unit": "USD",
            "sid": self.sid,
            "status": self.status,
            "subresource_uris": {"media": uri.replace(".json", "/Media.json")},
            "to": self.to,
            "uri": uri,
        }


@dataclass(frozen=True)
class ApiRequest:
    method: str
    path: str
    params: dict[str, str]
    status: int
    answered_at: float = field(default_factory=time.monotonic)  # when it was answered


@dataclass
class _Failure:
    status: int
    to: str | None


@dataclass
class _Burst:
    statuses: list[int]  # still to answer, in turn
    to: str | None
    skip: int  # accepted sends to let through first
    retry_after: int | None
    accept_5xx: bool


@dataclass
class _Hang:
    to: str | None
    skip: int  # accepted sends to let through (answered) first


@dataclass
class FakeTwilio:
    accounts: dict[str, TwilioAccount] = field(default_factory=dict)
    messages: list[TwilioMessage] = field(default_factory=list)
    requests: list[ApiRequest] = field(default_factory=list)
    _failures: list[_Failure] = field(default_factory=list)
    _refusals: dict[str, tuple[int, int]] = field(default_factory=dict)
    _bursts: list[_Burst] = field(default_factory=list)
    _hangs: list[_Hang] = field(default_factory=list)
    _hanging: list[TwilioMessage] = field(default_factory=list)
    _releases: dict[str, asyncio.Event] = field(default_factory=dict)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    def __post_init__(self) -> None:
        path = f"/{API_VERSION}/Accounts/{{account_sid}}/Messages.json"
        self.app = Starlette(
            routes=[
                Route(path, self._create_message, methods=["POST"]),
                Route(path, self._list_messages, methods=["GET"]),
            ]
        )

    # --- set up and script -------------------------------------------------------------

    def add_account(self, sid: str | None = None, auth_token: str | None = None) -> TwilioAccount:
        account = TwilioAccount(sid or new_sid("AC"), auth_token or secrets.token_hex(16))
        self.accounts[account.sid] = account
        return account

    def fail_next(self, count: int, status: int = 429, to: str | None = None) -> None:
        self._failures.extend(_Failure(status, to) for _ in range(count))

    def burst_next(
        self,
        statuses: Sequence[int],
        to: str | None = None,
        after: int = 0,
        retry_after: int | None = None,
        accept_5xx: bool = False,
    ) -> None:
        """The next sends to `to` (once `after` more were accepted) answer `statuses` in turn,
        e.g. (429, 429, 500): 429s carry `Retry-After: <retry_after>` when it is given; with
        `accept_5xx`, a 5xx is answered after the message was accepted (recorded in `messages`
        and listed, as when Twilio took it and failed to answer)."""
        if statuses:
            self._bursts.append(_Burst(list(statuses), to, after, retry_after, accept_5xx))

    def refuse(self, to: str, code: int = UNSUBSCRIBED_RECIPIENT, status: int = 400) -> None:
        self._refusals[to] = (code, status)

    def hang_next(self, count: int = 1, to: str | None = None, after: int = 0) -> None:
        """The next `count` accepted sends (to `to`) are held, once `after` more were answered
        (`after=1`: the second part of a message is held, the first goes through)."""
        self._hangs.extend(_Hang(to, after) for _ in range(count))

    def release(self, sid: str | None = None) -> None:
        """Answer the held send of message `sid`, or every send held now."""
        for held, event in self._releases.items():
            if sid in (None, held):
                event.set()

    # --- look --------------------------------------------------------------------------

    def sent(self, to: str | None = None) -> list[TwilioMessage]:
        return [m for m in self.messages if to is None or m.to == to]

    def message(self, sid: str) -> TwilioMessage:
        return next(m for m in self.messages if m.sid == sid)

    def sends(self, to: str | None = None) -> list[ApiRequest]:
        """Every send asked for (accepted or not)."""
        return [
            r
            for r in self.requests
            if r.method == "POST" and (to is None or r.params.get("To") == to)
        ]

    async def wait_sent(self, count: int, to: str | None = None, within: float = 30) -> None:
        await self.wait_for(lambda: len(self.sent(to)) >= count, within)

    async def wait_hanging(self, within: float = 30) -> TwilioMessage:
        """Until a send was accepted and its answer is being held: that message (the one
        held first, if several are)."""
        await self.wait_for(lambda: bool(self._hanging), within)
        return self._hanging[0]

    def hanging(self) -> list[TwilioMessage]:
        """The messages whose answers are being held now."""
        return list(self._hanging)

    async def wait_for(self, condition: Callable[[], bool], within: float) -> None:
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(condition), within)
            except TimeoutError:
                raise AssertionError(
                    f"not within {within} s; last requests: {self.requests[-3:]}"
                ) from None

    # --- status callbacks --------------------------------------------------------------

    async def send_status(
        self,
        sid: str,
        status: str,
        error_code: int | None = None,
        *,
        post_to: str | None = None,
        auth_token: str | None = None,
    ) -> httpx.Response:
        """Posts Twilio's status callback for the message to its StatusCallback, signed over
        that URL with the account's auth token (`auth_token` signs with another, to test a
        bad signature); `post_to` posts elsewhere (a proxy's inside address), signed the same.
        The message's status in the fake's list changes too."""
        message = self.message(sid)
        assert message.status_callback, f"message {sid} was sent without a StatusCallback"
        message.status, message.error_code = status, error_code
        params = {
            "AccountSid": message.account_sid,
            "ApiVersion": API_VERSION,
            "From": message.from_ or "",
            "MessageSid": sid,
            "MessageStatus": status,
            "SmsSid": sid,
            "SmsStatus": status,
            "To": message.to,
        }
        if message.messaging_service_sid:
            params["MessagingServiceSid"] = message.messaging_service_sid
        if error_code is not None:
            params["ErrorCode"] = str(error_code)
        token = auth_token or self.accounts[message.account_sid].auth_token
        signature = signature_of(token, message.status_callback, params)
        async with httpx.AsyncClient(timeout=30) as client:
            return await client.post(
                post_to or message.status_callback,
                data=params,
                headers={SIGNATURE_HEADER: signature},
            )

    # --- the API -----------------------------------------------------------------------

    async def _create_message(self, request: Request) -> JSONResponse:
        form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
        account_sid = request.path_params["account_sid"]
        if not self._authenticated(request, account_sid):
            return await self._error(request, form, AUTHENTICATE, 401)
        to = form.get("To", "")
        failure = next((f for f in self._failures if f.to in (None, to)), None)
        if failure is not None:
            self._failures.remove(failure)
            code = TOO_MANY_REQUESTS if failure.status == 429 else INTERNAL_ERROR
            return await self._error(request, form, code, failure.status)
        burst = next((b for b in self._bursts if b.to in (None, to)), None)
        if burst is not None and burst.skip == 0:
            status = burst.statuses.pop(0)
            if not burst.statuses:
                self._bursts.remove(burst)
            if status == 429:
                return await self._error(
                    request, form, TOO_MANY_REQUESTS, 429, retry_after=burst.retry_after
                )
            if burst.accept_5xx and self._invalid(form) is None:
                await self._accept(account_sid, form)
            return await self._error(request, form, INTERNAL_ERROR, status)
        problem = self._invalid(form)
        if problem is not None:
            return await self._error(request, form, problem, 400)
        if to in self._refusals:
            code, status = self._refusals[to]
            return await self._error(request, form, code, status)
        if burst is not None:
            burst.skip -= 1
        message = await self._accept(account_sid, form)
        hang = next((h for h in self._hangs if h.to in (None, to)), None)
        if hang is not None and hang.skip > 0:
            hang.skip -= 1
        elif hang is not None:
            self._hangs.remove(hang)
            if not await self._held(request, message):
                await self._log(request, form, 499)
                return JSONResponse({}, status_code=499)
        message.answered = True
        await self._log(request, form, 201)
        return JSONResponse(message.resource(), status_code=201)

    async def _accept(self, account_sid: str, form: Mapping[str, str]) -> TwilioMessage:
        """The message Twilio now has (listed from here on), whatever it answers."""
        message = TwilioMessage(
            sid=new_sid("SM"),
            account_sid=account_sid,
            to=form["To"],
            from_=form.get("From") or None,
            messaging_service_sid=form.get("MessagingServiceSid") or None,
            body=form["Body"],
            status_callback=form.get("StatusCallback") or None,
            date_created=datetime.now(UTC).replace(microsecond=0),
            # Twilio answers "accepted" when a messaging service still has to pick a sender.
            status="accepted" if form.get("MessagingServiceSid") else "queued",
        )
        async with self._changed:
            self.messages.append(message)
            self._changed.notify_all()
        return message

    async def _list_messages(self, request: Request) -> JSONResponse:
        account_sid = request.path_params["account_sid"]
        params = dict(request.query_params)
        if not self._authenticated(request, account_sid):
            return await self._error(request, params, AUTHENTICATE, 401)
        try:
            page_size = int(params.get("PageSize", DEFAULT_PAGE_SIZE))
            page = int(params.get("Page", 0))
        except ValueError:
            return await self._error(request, params, 20001, 400, "Invalid paging parameter")
        page_size = max(1, min(page_size, 1000))
        matching = [
            m
            for m in reversed(self.messages)  # newest first
            if m.account_sid == account_sid
            and params.get("To") in (None, m.to)
            and params.get("From") in (None, m.from_)
        ]
        chunk = matching[page * page_size : (page + 1) * page_size]
        path = request.url.path
        filters: dict[str, str] = {k: params[k] for k in ("To", "From") if k in params}

        def uri(number: int) -> str:
            query: dict[str, str | int] = {**filters, "PageSize": page_size, "Page": number}
            return f"{path}?{urlencode(query)}"

        more = (page + 1) * page_size < len(matching)
        await self._log(request, params, 200)
        return JSONResponse(
            {
                "messages": [m.resource() for m in chunk],
                "start": page * page_size,
                "end": page * page_size + max(0, len(chunk) - 1),
                "page": page,
                "page_size": page_size,
                "uri": uri(page),
                "first_page_uri": uri(0),
                "next_page_uri": uri(page + 1) if more else None,
                "previous_page_uri": uri(page - 1) if page > 0 else None,
            }
        )

    def _authenticated(self, request: Request, account_sid: str) -> bool:
        scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        account = self.accounts.get(user)
        return (
            account is not None
            and user == account_sid
            and secrets.compare_digest(password, account.auth_token)
        )

    @staticmethod
    def _invalid(form: Mapping[str, str]) -> int | None:
        if not form.get("To"):
            return TO_REQUIRED
        if not form.get("From") and not form.get("MessagingServiceSid"):
            return FROM_REQUIRED
        if not form.get("Body"):
            return BODY_REQUIRED
        if len(form["Body"]) > MAX_BODY_CHARS:
            return BODY_TOO_LONG
        return None

    async def _held(self, request: Request, message: TwilioMessage) -> bool:
        """False when the client went away before `release()`."""
        release = self._releases.setdefault(message.sid, asyncio.Event())
        async with self._changed:
            self._hanging.append(message)
            self._changed.notify_all()
        gone = asyncio.create_task(_disconnected(request))
        released = asyncio.create_task(release.wait())
        try:
            done, _ = await asyncio.wait({gone, released}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            released.cancel()
            del self._releases[message.sid]
            async with self._changed:
                self._hanging.remove(message)
                self._changed.notify_all()
        return released in done

    async def _error(
        self,
        request: Request,
        params: Mapping[str, str],
        code: int,
        status: int,
        message: str | None = None,
        retry_after: int | None = None,
    ) -> JSONResponse:
        await self._log(request, params, status)
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
        return JSONResponse(
            {
                "code": code,
                "message": message or _MESSAGES.get(code, f"Error {code}"),
                "more_info": f"https://www.twilio.com/docs/errors/{code}",
                "status": status,
            },
            status_code=status,
            headers=headers,
        )

    async def _log(self, request: Request, params: Mapping[str, str], status: int) -> None:
        async with self._changed:
            self.requests.append(ApiRequest(request.method, request.url.path, dict(params), status))
            self._changed.notify_all()


async def _disconnected(request: Request) -> None:
    # The form is read, so the next ASGI message is the disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        pass
