"""The `parley` command: dev, api, worker, migrate, create-key, revoke-key, replay, history
export."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from src.config import Settings, load_settings
from src.observability import configure_logging

if TYPE_CHECKING:
    from temporalio.client import Client, WorkflowHistory


def main(argv: list[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "new-key":
        from src.sealing.state_envelope import new_key_setting

        if not args.id.isalnum():
            parser.error("--id must be letters and digits")
        print(new_key_setting(args.id))
        return
    settings = _settings_or_exit()
    configure_logging(settings)
    if args.command in ("replay", "history"):
        _quiet_unless(args.verbose)
    _run(args, settings)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="parley", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("dev", help="run the whole dev stack in the foreground")
    commands.add_parser("api", help="run the HTTP API")
    commands.add_parser("worker", help="run a Temporal worker")
    commands.add_parser("migrate", help="apply database migrations")
    create_key = commands.add_parser("create-key", help="create an API key for an account")
    create_key.add_argument("--account", default="default", help="account id (created if new)")
    revoke_key = commands.add_parser(
        "revoke-key",
        help="revoke an API key (API processes refuse it within PARLEY_API_KEY_CACHE_SECONDS)",
    )
    revoke_key.add_argument(
        "key", help="the key, as create-key printed it; '-' reads it from standard input"
    )
    new_key = commands.add_parser(
        "new-key",
        help="print a new AES-256 key entry for PARLEY_PAYLOAD_KEYS / _STATE_KEYS / _SECRET_KEYS",
    )
    new_key.add_argument("--id", default="k1", help="the key id (letters and digits)")
    commands.add_parser(
        "reseal-secrets",
        help="re-encrypt every stored tenant secret with the first PARLEY_SECRET_KEYS key",
    )
    replay = commands.add_parser(
        "replay",
        help="replay recorded histories against the current workflow code (exit 1 on a failure)",
    )
    _add_history_source(replay, with_file=True)
    history = commands.add_parser("history", help="workflow histories")
    history_commands = history.add_subparsers(dest="history_command", required=True)
    export = history_commands.add_parser("export", help="save every run's history to a JSON file")
    _add_history_source(export, with_file=False)
    export.add_argument("-o", "--output", required=True, help="the JSON file to write")
    return parser


def _settings_or_exit() -> Settings:
    try:
        return load_settings()
    except ValidationError as error:
        problems = "\n".join(
            f"  {problem['msg'].removeprefix('Value error, ')}" for problem in error.errors()
        )
        print(f"parley: the configuration is not valid:\n{problems}", file=sys.stderr)
        sys.exit(2)


def _run(args: argparse.Namespace, settings: Settings) -> None:
    if args.command == "dev":
        from src.dev_stack import DevStack

        sys.exit(DevStack(settings).run())
    elif args.command == "api":
        import uvicorn

        from src.api.app import create_app

        uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info")
    elif args.command == "worker":
        from src.worker import run_worker

        try:
            asyncio.run(run_worker(settings))
        except KeyboardInterrupt:
            pass
    elif args.command == "migrate":
        from src.db.engine import migrate

        migrate(settings.database_url)
        print("database is at the latest migration")
    elif args.command == "create-key":
        print(asyncio.run(_create_key(settings, args.account)))
    elif args.command == "revoke-key":
        key = sys.stdin.readline().strip() if args.key == "-" else args.key
        if not asyncio.run(revoke_key_command(settings, key)):
            print("parley revoke-key: no such key", file=sys.stderr)
            sys.exit(1)
        print(f"revoked; refused by every API process within {settings.api_key_cache_seconds:g} s")
    elif args.command == "reseal-secrets":
        from src.sealing.secret_storage import reseal_stored_secrets

        print(asyncio.run(reseal_stored_secrets(settings)))
    elif args.command == "replay":
        sys.exit(_replay(settings, args))
    elif args.command == "history":
        sys.exit(_export(settings, args))


def _add_history_source(parser: argparse.ArgumentParser, *, with_file: bool) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--session", help="a session (or stateless call) id: all its workflows")
    source.add_argument("--workflow-id", help="a workflow id: all its runs")
    if with_file:
        source.add_argument("--file", help="a file written by `parley history export`")
    parser.add_argument(
        "--no-children",
        action="store_true",
        help="with --session, leave out the webhook delivery child workflows",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show the SDK's own logs")


async def _fetch(
    settings: Settings, args: argparse.Namespace
) -> tuple[Client, list[WorkflowHistory]]:
    from src.temporal.client import connect_temporal
    from src.temporal.histories import fetch_histories, session_queries, workflow_query

    if args.session:
        queries = await session_queries(settings, args.session, children=not args.no_children)
    else:
        queries = [workflow_query(args.workflow_id)]
    client = await connect_temporal(settings)
    return client, await fetch_histories(client, queries)


def _replay(settings: Settings, args: argparse.Namespace) -> int:
    """0 when every run replays cleanly, 1 when any fails, 2 when there is nothing to replay."""
    from temporalio.converter import DataConverter
    from temporalio.runtime import Runtime, TelemetryConfig

    from src.temporal.client import data_converter
    from src.temporal.histories import HistoryNotFound, load_histories
    from src.temporal.replay import exit_status, format_reports, replay_histories

    converter: DataConverter
    try:
        if args.file:
            histories = load_histories(Path(args.file).read_text())
            converter = data_converter(settings)
        else:
            client, histories = asyncio.run(_fetch(settings, args))
            # The client's converter (codec included) is the one the workers wrote with.
            converter = client.data_converter
    except (HistoryNotFound, OSError, ValueError) as error:
        print(f"parley replay: {error}", file=sys.stderr)
        return 2
    if not histories:
        print("parley replay: no workflow runs found", file=sys.stderr)
        return 2
    # The report says what failed; Core's own warnings would repeat it, less readably.
    runtime = None if args.verbose else Runtime(telemetry=TelemetryConfig(logging=None))
    reports = asyncio.run(replay_histories(histories, converter, runtime=runtime))
    print(format_reports(reports))
    return exit_status(reports)


def _export(settings: Settings, args: argparse.Namespace) -> int:
    from src.temporal.histories import HistoryNotFound, dump_histories

    try:
        _, histories = asyncio.run(_fetch(settings, args))
    except (HistoryNotFound, ValueError) as error:
        print(f"parley history export: {error}", file=sys.stderr)
        return 2
    if not histories:
        print("parley history export: no workflow runs found", file=sys.stderr)
        return 2
    Path(args.output).write_text(dump_histories(histories))
    print(f"{len(histories)} run(s) written to {args.output}")
    return 0


def _quiet_unless(verbose: bool) -> None:
    """Replay and export print a report; INFO logs (and the SDK's record of the failures the
    report already shows) would bury it."""
    if not verbose:
        logging.getLogger().setLevel(logging.WARNING)
        logging.getLogger("temporalio").setLevel(logging.CRITICAL)


async def _create_key(settings: Settings, account: str) -> str:
    from src.db.engine import create_engine, session_factory
    from src.services.accounts import new_api_key, register_api_key

    engine = create_engine(settings.database_url)
    try:
        key = new_api_key()
        await register_api_key(session_factory(engine), key, account_id=account)
        return key
    finally:
        await engine.dispose()


async def revoke_key_command(settings: Settings, key: str) -> bool:
    """What `parley revoke-key` does: False when the key is not stored."""
    from src.db.engine import create_engine, session_factory
    from src.services.accounts import revoke_api_key

    engine = create_engine(settings.database_url)
    try:
        return await revoke_api_key(session_factory(engine), key)
    finally:
        await engine.dispose()


if __name__ == "__main__":
    main()
