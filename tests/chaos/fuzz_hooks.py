"""Schemathesis hooks for the OpenAPI fuzz case (loaded through SCHEMATHESIS_HOOKS).

- Every 4xx must carry the one error shape `{"error": {"code", "message", "details"}}`; under
  `/compat/osvi`, OSVI's envelope `{"success": false, "errors": ["..."]}` instead, and under
  `/api/v1/openai`, OpenAI's: `{"error": {"message", "type", "param", "code"}}`, and under
  `/compat/vapi`, Vapi's `{"message", "error", "statusCode"}`.
- Generated bodies never point Parley anywhere but a closed loopback port: every URL-like
  string is replaced (the fuzzed server allows no loopback URLs, so such agents are refused
  with 422 and nothing is called), and model names that select a special behaviour of the
  fake LLM (holding, sleeping) are replaced by "echo".
- Path parameters, and the fields of bodies and queries that name an agent or a session in
  each face's words (`agent_uuid`, `assistantId`, an OpenAI `model`, `sessionId`, ...), are
  sometimes a real session or agent (PARLEY_FUZZ_SESSION_ID, PARLEY_FUZZ_AGENT_ID), so fuzzed
  messages, ends and reads reach past the 404.
- Twilio's webhooks (their form described by tests/chaos/unlisted_operations.py) are posted
  sometimes to the real number (PARLEY_FUZZ_NUMBER; the status callback with a real
  MessageSid, PARLEY_FUZZ_MESSAGE_SID), and every form is signed with `X-Twilio-Signature`
  over PARLEY_FUZZ_PUBLIC_URL with the number's auth token (PARLEY_FUZZ_TWILIO_TOKEN), as
  Twilio signs it: a fuzzed text gets past the signature check to the SMS channel.
- Each response's status is appended to PARLEY_FUZZ_TALLY for the report.
"""

from __future__ import annotations

import os
from typing import Any

import schemathesis
from hypothesis import strategies as st

from src.sms.signatures import SIGNATURE_HEADER, signature_of

CLOSED_LOOPBACK_URL = "http://127.0.0.1:9/fuzz"
# The OpenAI-compatible face answers in OpenAI's error shape instead (src/api/openai_errors.py).
OPENAI_PREFIX = "/api/v1/openai"
NATIVE_ERROR_FIELDS = {"code", "message", "details"}
OPENAI_ERROR_FIELDS = {"message", "type", "param", "code"}
TWILIO_PREFIX = "/channels/twilio/"
# The fields that name an agent or a session, in Parley's words and the faces'.
AGENT_FIELDS = ("agent_id", "agent_uuid", "assistantId", "model")
SESSION_FIELDS = ("session_id", "sessionId")
CHAT_MESSAGE = {"role": "user", "content": "fuzz"}
FAKE_BEHAVIOURS = ("hold-", "slow-", "burst-", "flaky-", "limited-", "hang-", "invalid-json-")


def _defuse(value: Any) -> Any:
    if isinstance(value, dict):
        out = {key: _defuse(item) for key, item in value.items()}
        for key, item in out.items():
            if key.lower().endswith("url") and isinstance(item, str):
                out[key] = CLOSED_LOOPBACK_URL
        name = out.get("name")
        if "provider" in out and isinstance(name, str) and name.startswith(FAKE_BEHAVIOURS):
            out["name"] = "echo"
        return out
    if isinstance(value, list):
        return [_defuse(item) for item in value]
    if isinstance(value, str) and "://" in value:
        return CLOSED_LOOPBACK_URL
    return value


@schemathesis.hook
def map_body(ctx: Any, body: Any) -> Any:
    return _defuse(body)


def _with_real_ids(values: Any) -> Any:
    """The values as generated, or with the text fields that name an agent (or a session)
    set to the real one."""
    if not isinstance(values, dict):
        return st.just(values)
    options = [values]
    for fields, real in (
        (AGENT_FIELDS, os.environ.get("PARLEY_FUZZ_AGENT_ID")),
        (SESSION_FIELDS, os.environ.get("PARLEY_FUZZ_SESSION_ID")),
    ):
        named = {k: real for k in fields if isinstance(values.get(k), str)}
        if real and named:
            options.append({**values, **named})
    agent = os.environ.get("PARLEY_FUZZ_AGENT_ID")
    if agent and isinstance(values.get("messages"), list):
        # An OpenAI chat completion the face takes, the rest of the body as fuzzed: the
        # generated messages are rarely ones (their schema leaves them open).
        options.append({**values, "model": agent, "messages": [CHAT_MESSAGE]})
    return st.sampled_from(options)


@schemathesis.hook
def flatmap_query(ctx: Any, query: Any) -> Any:
    return _with_real_ids(query)


@schemathesis.hook
def flatmap_body(ctx: Any, body: Any) -> Any:
    """A Twilio form as fuzzed or to the real number (the text's To, the status's From);
    any other body with real ids or not."""
    path = str(ctx.operation.path) if ctx.operation is not None else ""
    number = os.environ.get("PARLEY_FUZZ_NUMBER")
    if not path.startswith(TWILIO_PREFIX):
        return _with_real_ids(body)
    if not (isinstance(body, dict) and number):
        return st.just(body)
    if path.endswith("/sms"):
        return st.sampled_from([body, {**body, "To": number}])
    real_sid = os.environ.get("PARLEY_FUZZ_MESSAGE_SID", "")
    return st.sampled_from(
        [body, {**body, "From": number}, {**body, "From": number, "MessageSid": real_sid}]
    )


@schemathesis.hook
def before_call(ctx: Any, case: Any, kwargs: Any) -> None:
    """Sign a Twilio form as Twilio would (a form that is not one of strings is signed over
    its values as text, and may well be refused: so would Twilio's be)."""
    path = str(case.operation.path)
    token = os.environ.get("PARLEY_FUZZ_TWILIO_TOKEN")
    if not (path.startswith(TWILIO_PREFIX) and isinstance(case.body, dict) and token):
        return
    public_url = os.environ.get("PARLEY_FUZZ_PUBLIC_URL", "").rstrip("/")
    params = {str(key): str(value) for key, value in case.body.items()}
    case.headers = {
        **(case.headers or {}),
        SIGNATURE_HEADER: signature_of(token, public_url + path, params),
    }


@schemathesis.hook
def flatmap_path_parameters(ctx: Any, parameters: Any) -> Any:
    real = {
        "session_id": os.environ.get("PARLEY_FUZZ_SESSION_ID"),
        "agent_id": os.environ.get("PARLEY_FUZZ_AGENT_ID"),
        "model_id": os.environ.get("PARLEY_FUZZ_AGENT_ID"),  # the OpenAI face's model: an agent
    }
    if not isinstance(parameters, dict):
        return st.just(parameters)
    options = [parameters] + [
        {**parameters, name: value} for name, value in real.items() if value and name in parameters
    ]
    return st.sampled_from(options)


@schemathesis.check
def parley_error_shape(ctx: Any, response: Any, case: Any) -> bool | None:
    tally = os.environ.get("PARLEY_FUZZ_TALLY")
    if tally:
        with open(tally, "a") as out:
            # The operation's method: the coverage phase also sends others (TRACE, ...) to it.
            operation = case.operation
            out.write(f"{operation.method.upper()} {operation.path} {response.status_code}\n")
    if not 400 <= response.status_code < 500:
        return None
    try:
        body = response.json()
    except ValueError:
        raise AssertionError(f"{response.status_code} without a JSON body") from None
    if case.operation.path.startswith("/compat/osvi/"):
        _check_osvi_envelope(response.status_code, body)
        return None
    if case.operation.path.startswith("/compat/vapi/"):
        _check_vapi_error(response.status_code, body)
        return None
    error = body.get("error") if isinstance(body, dict) else None
    openai_face = str(case.operation.path).startswith(OPENAI_PREFIX)
    if not (
        isinstance(body, dict)
        and set(body) == {"error"}
        and isinstance(error, dict)
        and set(error) == (OPENAI_ERROR_FIELDS if openai_face else NATIVE_ERROR_FIELDS)
        and isinstance(error["code"], str)
        and isinstance(error["message"], str)
    ):
        raise AssertionError(f"{response.status_code} not in the one error shape: {body!r}")
    return None


def _check_osvi_envelope(status: int, body: Any) -> None:
    errors = body.get("errors") if isinstance(body, dict) else None
    if not (
        isinstance(body, dict)
        and set(body) == {"success", "errors"}
        and body["success"] is False
        and isinstance(errors, list)
        and errors
        and all(isinstance(error, str) for error in errors)
    ):
        raise AssertionError(f"{status} not in OSVI's error envelope: {body!r}")


def _check_vapi_error(status: int, body: Any) -> None:
    if not (
        isinstance(body, dict)
        and set(body) == {"message", "error", "statusCode"}
        and body["statusCode"] == status
        and isinstance(body["message"], str)
    ):
        raise AssertionError(f"{status} not in Vapi's error shape: {body!r}")
