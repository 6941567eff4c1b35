"""`parley reseal-secrets`: after a new key is put first in PARLEY_SECRET_KEYS, re-encrypt
every stored tenant secret with it (rows written in clear before encryption too), so the old
key can then be dropped."""

from __future__ import annotations

from src.config import Settings
from src.db.engine import create_engine, session_factory
from src.db.snapshots import SnapshotStore
from src.sealing.secret_box import SecretBox
from src.services.agents import AgentService


async def reseal_stored_secrets(settings: Settings) -> str:
    engine = create_engine(settings.database_url)
    try:
        sessions = session_factory(engine)
        snapshots = SnapshotStore(sessions, SecretBox(settings.secret_keys()))
        changed, unreadable = await AgentService(settings, sessions, snapshots).reseal()
    finally:
        await engine.dispose()
    report = f"{changed} row(s) resealed with key {settings.secret_keys()[0].key_id!r}"
    if unreadable:
        report += f"; {unreadable} row(s) sealed with a key not in PARLEY_SECRET_KEYS, left as is"
    return report
