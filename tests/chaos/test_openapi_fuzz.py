"""Fuzz every operation of the OpenAPI document with schemathesis, over real HTTP, with a
valid API key (as a Bearer token and as OSVI's `API-Token`), and then every route the document
leaves out (tests/chaos/unlisted_operations.py: the faces' catch-alls, Twilio's signed
webhook forms, the pages): no 5xx at all, and every 4xx in the error shape of its face
(tests/chaos/fuzz_hooks.py). Against PostgreSQL when one answers (it is stricter about text
than SQLite), else SQLite."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from temporalio.client import Client

from src.db.engine import create_engine, session_factory
from src.services.accounts import new_api_key, register_api_key
from src.worker import running_worker
from tests.chaos.conftest import PostgresFactory
from tests.chaos.harness import REPO, SCALE, marker, report
from tests.chaos.unlisted_operations import operations_of, unlisted_document
from tests.conftest import SettingsFactory, api_client
from tests.fakes.twilio_server import FakeTwilio
from tests.sessions import open_chat
from tests.sms import AUTH_TOKEN, add_number, new_number, text_in

# Where each face's operations start; the first that matches names it in the report.
FACES = (
    ("OpenAI face", "/api/v1/openai"),
    ("OSVI face", "/compat/osvi"),
    ("Vapi face", "/compat/vapi"),
    ("Twilio webhooks", "/channels/twilio"),
    ("core API", "/api/v1"),
    ("pages, health, codec", "/"),
)


def face_of(path: str) -> str:
    return next(name for name, prefix in FACES if path.startswith(prefix))


async def schemathesis(
    schema: str, base: str, key: str, env: dict[str, str], cwd: Path, log: Path, workers: int = 2
) -> int:
    """One `st run` of a schema (a URL or a file) against the API at `base`; its exit code."""
    command = [
        str(Path(sys.executable).parent / "st"), "run", schema,
        "--url", base,
        "--header", f"Authorization: Bearer {key}",
        "--header", f"API-Token: {key}",  # the OSVI-compatible routes' key header
        "--checks", "not_a_server_error,parley_error_shape",
        "--max-examples", str(SCALE.fuzz_examples),
        "--phases", SCALE.fuzz_phases,
        "--workers", str(workers),
        "--seed", os.environ.get("PARLEY_FUZZ_SEED", "20261129"),
        "--request-timeout", "120",
        "--generation-database", "none",
        "--suppress-health-check", "all",
        # A live stream of an active session answers for as long as the session lives:
        # not a request with a response to check (tests/test_streaming.py covers it).
        "--exclude-path-regex", "/stream$",
        "--no-color",
    ]  # fmt: skip
    with log.open("ab") as out:
        process = await asyncio.create_subprocess_exec(
            *command, cwd=cwd, env=env, stdout=out, stderr=out
        )
        return await asyncio.wait_for(process.wait(), timeout=1200)


async def echo_agent(http: httpx.AsyncClient) -> str:
    agent = await http.post(
        "/agents",
        json={
            "name": "fuzz",
            "system_prompt": "Fuzz.",
            "model": {"provider": "openai", "name": "echo"},
        },
    )
    assert agent.status_code == 201, agent.text
    return str(agent.json()["id"])


async def test_openapi_fuzz_finds_no_server_errors(
    chaos_postgres: PostgresFactory | None,
    database_url: str,
    make_settings: SettingsFactory,
    serve_api: Any,
    temporal_client: Client,
    fake_twilio: tuple[FakeTwilio, str],
    tmp_path: Path,
) -> None:
    if chaos_postgres is not None:
        url, _ = await chaos_postgres("parley_chaos_fuzz")
    else:
        url = database_url
    settings = make_settings(
        DATABASE_URL=url,
        TEMPORAL_TASK_QUEUE=f"chaos-fuzz-{marker()}",
        # No loopback or private URL may be used by fuzzed agents, and no MCP command.
        PARLEY_TOOL_URL_ALLOWLIST="",
        PARLEY_MCP_COMMANDS="",
        # The codec's own rule on a loopback host (as in the dev stack): no token, so that
        # fuzzed payloads reach it (tests/test_codec.py covers its token).
        PARLEY_CODEC_AUTH="none",
    )
    engine = create_engine(url)
    key = new_api_key()
    await register_api_key(session_factory(engine), key, account_id=f"fuzz-{marker()}")
    await engine.dispose()
    tally = tmp_path / "tally.txt"
    log = tmp_path / "schemathesis.log"
    unlisted = tmp_path / "unlisted.json"
    unlisted.write_text(json.dumps(unlisted_document()))
    fake = fake_twilio[0]
    async with (
        running_worker(settings, temporal_client),
        serve_api(settings) as base,
        api_client(base, key) as http,
    ):
        # A real agent and session, for the path parameters the fuzzer would only guess.
        agent_id = await echo_agent(http)
        session = await open_chat(http, agent_id)
        # A real number and a text sent from it, for the Twilio forms.
        number = (await add_number(http, fake, agent_id))["number"]
        person = new_number()
        async with httpx.AsyncClient(base_url=base, timeout=30) as twilio:
            assert (await text_in(twilio, settings, person, number, "hi")).status_code == 200
        await fake.wait_sent(1, to=person, within=60)
        env = {
            **os.environ,
            "SCHEMATHESIS_HOOKS": "tests.chaos.fuzz_hooks",
            "PARLEY_FUZZ_TALLY": str(tally),
            "PARLEY_FUZZ_AGENT_ID": agent_id,
            "PARLEY_FUZZ_SESSION_ID": session["id"],
            "PARLEY_FUZZ_NUMBER": number,
            "PARLEY_FUZZ_MESSAGE_SID": fake.sent(person)[0].sid,
            "PARLEY_FUZZ_TWILIO_TOKEN": AUTH_TOKEN,
            "PARLEY_FUZZ_PUBLIC_URL": settings.public_url,
            "PYTHONPATH": str(REPO),
        }
        served = (await http.get(f"{base}/openapi.json")).json()
        # The routes left out first: fuzzing the document's learns ids from its answers
        # (schemathesis reuses them) and may delete the number the Twilio forms are for. One
        # worker: two crashed once in Hypothesis' ast.parse of a lambda ("AST constructor
        # recursion depth mismatch", CPython 3.11's parser is not thread-safe there).
        codes = [
            await schemathesis(str(unlisted), base, key, env, tmp_path, log, workers=1),
            await schemathesis(f"{base}/openapi.json", base, key, env, tmp_path, log),
        ]
    output = log.read_text(errors="replace")
    answered = [line.split(" ") for line in tally.read_text().splitlines() if line]
    by_face: dict[str, Counter[str]] = {}
    operations: dict[str, set[str]] = {}
    for method, path, status in answered:
        face = face_of(path)
        by_face.setdefault(face, Counter())[f"{int(status) // 100}xx"] += 1
        operations.setdefault(face, set()).add(f"{method} {path}")
    total = Counter[str]()
    for counts in by_face.values():
        total.update(counts)
    listed, unlisted_ops = operations_of(served), operations_of(unlisted_document())
    seen = set().union(*operations.values())
    report(
        "OpenAPI fuzz (schemathesis)",
        f"{len(answered)} requests over {len(seen)} operations: {len(seen & listed)} of the "
        f"{len(listed)} in /openapi.json (the live stream left out), "
        f"{len(seen & (unlisted_ops - listed))} it does not list, and Twilio's "
        f"{len(unlisted_ops & listed)} webhooks again with their signed form "
        f"({SCALE.fuzz_phases}; {'PostgreSQL' if chaos_postgres else 'SQLite'}): "
        f"{total['2xx']} 2xx, {total['4xx']} 4xx (each in its face's error shape), "
        f"{total['5xx']} 5xx",
    )
    for name, _ in FACES:
        counts = by_face.get(name, Counter())
        report(
            f"OpenAPI fuzz, {name}",
            f"{len(operations.get(name, ()))} operations, {sum(counts.values())} requests: "
            + ", ".join(f"{counts[c]} {c}" for c in ("2xx", "3xx", "4xx", "5xx") if counts[c]),
        )
    assert codes == [0, 0], output[-6000:]
    assert total["5xx"] == 0
    streams = {operation for operation in listed if operation.endswith("/stream")}
    assert seen == (listed | unlisted_ops) - streams, "operations never answered: " + ", ".join(
        sorted((listed | unlisted_ops) - streams - seen)
    )
