"""`parley reseal-secrets`: after a new key is put first in PARLEY_SECRET_KEYS, re-encrypt
every stored tenant secret with it (rows written in clear before encryption too), so the old
key can then be dropped: agents' secrets and phone numbers' auth tokens."""

from __future__ import annotations

from src.config import Settings
from src.db.engine import create_engine, session_factory
from src.db.snapshots import SnapshotStore
from src.sealing.secret_box import SecretBox
from src.services.agents import AgentService
from src.services.phone_numbers import PhoneNumberService
from src.services.squads import SquadService


async def reseal_stored_secrets(settings: Settings, account_id: str | None = None) -> str:
    """Reseals every account's secrets (one account's with `account_id`); the report line."""
    engine = create_engine(settings.database_url)
    try:
        sessions = session_factory(engine)
        snapshots = SnapshotStore(sessions, SecretBox(settings.secret_keys()))
        agents = AgentService(settings, sessions, snapshots)
        squads = SquadService(sessions, agents, SecretBox(settings.secret_keys()))
        changed, unreadable = await agents.reseal(account_id)
        numbers_changed, numbers_unreadable = await PhoneNumberService(
            settings, sessions, agents, squads
        ).reseal(account_id)
        squads_changed, squads_unreadable = await squads.reseal(account_id)
    finally:
        await engine.dispose()
    changed += numbers_changed + squads_changed
    unreadable += numbers_unreadable + squads_unreadable
    report = f"{changed} row(s) resealed with key {settings.secret_keys()[0].key_id!r}"
    if unreadable:
        report += f"; {unreadable} row(s) sealed with a key not in PARLEY_SECRET_KEYS, left as is"
    return report
