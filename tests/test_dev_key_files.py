"""Key files the dev stack generates in the data dir are created readable by their owner
only: created with mode 0600 (and O_EXCL), never written world-readable and chmodded after."""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from src.config import Settings
from src.dev_stack import DevStack
from src.sealing.state_envelope import create_private_file

_recorded: list[tuple[str, tuple[Any, ...]]] | None = None


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _recorded is not None and event in ("open", "os.chmod"):
        _recorded.append((event, args))


sys.addaudithook(_audit)  # audit hooks stay for the process; this one records only on demand


@contextmanager
def file_calls_and_umask(mask: int) -> Iterator[list[tuple[str, tuple[Any, ...]]]]:
    global _recorded
    _recorded = []
    previous = os.umask(mask)
    try:
        yield _recorded
    finally:
        os.umask(previous)
        _recorded = None


def test_dev_key_files_are_created_with_mode_0600_and_never_chmodded(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    settings = Settings(_env_file=None, PARLEY_DATA_DIR=data_dir)
    stack = DevStack(settings)

    with file_calls_and_umask(0) as calls:  # a permissive umask must not matter
        stack._payload_encryption(data_dir)
        stack._api_key(data_dir)
        settings.state_keys()
        settings.secret_keys()

    files = ["payload-keys", "dev-api-key", "state-keys", "secret-keys"]
    for name in files:
        assert stat.S_IMODE((data_dir / name).stat().st_mode) == 0o600, name
    writes = [
        (event, args)
        for event, args in calls
        if event == "os.chmod"
        # (an int path is os.fdopen of a descriptor os.open made)
        or (event == "open" and not isinstance(args[0], int) and args[1] not in (None, "r", "rb"))
    ]
    creations = [args for event, args in calls if event == "open" and args[1] is None]
    assert writes == []  # no open(..., "w") of a key file, no chmod after the fact
    assert len(creations) == len(files)
    for _, _, flags in creations:
        assert flags & os.O_CREAT and flags & os.O_EXCL
    assert sorted(p.name for p in data_dir.iterdir()) == sorted(files)  # no drafts left


def test_an_existing_key_file_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "state-keys"
    create_private_file(path, "first")

    create_private_file(path, "second")

    assert path.read_text() == "first"
