"""Inputs the OpenAPI fuzzer (tests/chaos/test_openapi_fuzz.py) turned into 500s: numbers past
what the database columns hold. Each is a 422 now. And requests under the OpenAI face that no
route of it takes, answered in Parley's shape where an OpenAI SDK reads only OpenAI's."""

from __future__ import annotations

import base64
import json

import httpx

from tests.conftest import AgentFactory
from tests.sessions import open_chat


def _assert_invalid(response: httpx.Response) -> None:
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_input"


async def test_agent_version_past_the_column_range_is_422(
    http: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    agent_id = await make_agent()

    _assert_invalid(await http.get(f"/agents/{agent_id}", params={"version": 7369092805}))


async def test_events_cursor_past_the_id_range_is_422(
    http: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    session = await open_chat(http, await make_agent())
    for value in (2**70, -1, 1e300):
        cursor = base64.urlsafe_b64encode(json.dumps([value]).encode()).decode().rstrip("=")

        _assert_invalid(await http.get(f"/chats/{session['id']}/events", params={"cursor": cursor}))


def _assert_openai_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.json() == {
        "error": {
            "message": response.json()["error"]["message"],
            "type": "invalid_request_error",
            "param": None,
            "code": code,
        }
    }


async def test_a_method_the_openai_face_has_no_route_for_answers_in_openais_shape(
    http: httpx.AsyncClient,
) -> None:
    _assert_openai_error(await http.request("TRACE", "/openai/models"), 405, "method_not_allowed")


async def test_a_path_the_openai_catch_all_cannot_match_answers_in_openais_shape(
    http: httpx.AsyncClient,
) -> None:
    # Starlette's path converter does not match a newline: no route of the face takes it.
    _assert_openai_error(await http.patch("/openai/a%0D%0Ab"), 404, "not_found")
