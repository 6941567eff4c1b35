"""Fuzz every operation of the OpenAPI document with schemathesis, over real HTTP, with a
valid API key: no 5xx at all, and every 4xx in the one error shape (tests/chaos/fuzz_hooks.py).
Against PostgreSQL when one answers (it is stricter about text than SQLite), else SQLite."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from temporalio.client import Client

from src.db.engine import create_engine, session_factory
from src.services.accounts import new_api_key, register_api_key
from src.worker import running_worker
from tests.chaos.conftest import PostgresFactory
from tests.chaos.harness import REPO, SCALE, marker, report
from tests.conftest import SettingsFactory, api_client
from tests.sessions import open_chat


async def test_openapi_fuzz_finds_no_server_errors(
    chaos_postgres: PostgresFactory | None,
    database_url: str,
    make_settings: SettingsFactory,
    serve_api: Any,
    temporal_client: Client,
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
    )
    engine = create_engine(url)
    key = new_api_key()
    await register_api_key(session_factory(engine), key, account_id=f"fuzz-{marker()}")
    await engine.dispose()
    tally = tmp_path / "tally.txt"
    log = tmp_path / "schemathesis.log"
    async with (
        running_worker(settings, temporal_client),
        serve_api(settings) as base,
        api_client(base, key) as http,
    ):
        # A real agent and session, for the path parameters the fuzzer would only guess.
        agent = await http.post(
            "/agents",
            json={
                "name": "fuzz",
                "system_prompt": "Fuzz.",
                "model": {"provider": "openai", "name": "echo"},
            },
        )
        assert agent.status_code == 201, agent.text
        session = await open_chat(http, agent.json()["id"])
        env = {
            **os.environ,
            "SCHEMATHESIS_HOOKS": "tests.chaos.fuzz_hooks",
            "PARLEY_FUZZ_TALLY": str(tally),
            "PARLEY_FUZZ_AGENT_ID": agent.json()["id"],
            "PARLEY_FUZZ_SESSION_ID": session["id"],
            "PYTHONPATH": str(REPO),
        }
        command = [
            str(Path(sys.executable).parent / "st"), "run", f"{base}/openapi.json",
            "--header", f"Authorization: Bearer {key}",
            "--header", f"API-Token: {key}",  # the OSVI-compatible routes' key header
            "--checks", "not_a_server_error,parley_error_shape",
            "--max-examples", str(SCALE.fuzz_examples),
            "--phases", SCALE.fuzz_phases,
            "--workers", "2",
            "--seed", os.environ.get("PARLEY_FUZZ_SEED", "20261129"),
            "--request-timeout", "120",
            "--generation-database", "none",
            "--suppress-health-check", "all",
            # A live stream of an active session answers for as long as the session lives:
            # not a request with a response to check (tests/test_streaming.py covers it).
            "--exclude-path-regex", "/stream$",
            "--no-color",
        ]  # fmt: skip
        with log.open("wb") as out:
            process = await asyncio.create_subprocess_exec(
                *command, cwd=tmp_path, env=env, stdout=out, stderr=out
            )
            code = await asyncio.wait_for(process.wait(), timeout=1200)
    output = log.read_text(errors="replace")
    statuses = Counter(
        int(line.rsplit(" ", 1)[1]) for line in tally.read_text().splitlines() if line
    )
    tested = re.search(r"Tested: (\d+)", output)
    by_class = Counter(f"{status // 100}xx" for status in statuses.elements())
    report(
        "OpenAPI fuzz (schemathesis)",
        f"{sum(statuses.values())} requests over {tested.group(1) if tested else '?'} "
        f"operations ({SCALE.fuzz_phases}; {'PostgreSQL' if chaos_postgres else 'SQLite'}): "
        f"{by_class['2xx']} 2xx, "
        f"{by_class['4xx']} 4xx (all in the error shape), {by_class['5xx']} 5xx",
    )
    assert code == 0, output[-6000:]
    assert by_class["5xx"] == 0
