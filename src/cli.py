"""The `parley` command: dev, api, worker, migrate, create-key."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from src.config import Settings, load_settings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="parley", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("dev", help="run the whole dev stack in the foreground")
    commands.add_parser("api", help="run the HTTP API")
    commands.add_parser("worker", help="run a Temporal worker")
    commands.add_parser("migrate", help="apply database migrations")
    create_key = commands.add_parser("create-key", help="create an API key for an account")
    create_key.add_argument("--account", default="default", help="account id (created if new)")
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = load_settings()
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


if __name__ == "__main__":
    main()
