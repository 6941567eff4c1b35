"""The variables an agent's templates (system prompt, first message) are rendered with."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from src.domain import TemplateTooLarge, render_template
from src.errors import InvalidInput

TIMEZONE_KEY = "timezone"
# The external_id keys a session's SIP endpoint is read from, first one found wins.
SIP_ENDPOINT_KEYS = ("sip_endpoint", "sip")
# How long a rendered template may get by default (PARLEY_MAX_RENDERED_TEMPLATE_CHARS): as long
# as the longest system prompt an agent may have, so variables can fill it but not multiply it.
DEFAULT_MAX_RENDERED_CHARS = 100_000
# The longest IANA name is 32 characters; anything much longer is no zone, and not worth a
# file-system lookup.
_MAX_ZONE_NAME_CHARS = 64


def zone_named(name: object) -> ZoneInfo | None:
    """The IANA time zone `name` names, or None: never raises, whatever `name` is. (ZoneInfo
    raises ValueError, KeyError or OSError: `America` is a directory, a long name is too long
    for the file system.)"""
    if not isinstance(name, str) or not name or len(name) > _MAX_ZONE_NAME_CHARS:
        return None
    try:
        return ZoneInfo(name)
    except (ValueError, KeyError, OSError):
        return None


def check_timezone(additional_data: Mapping[str, Any]) -> None:
    """Refuse an `additional_data.timezone` that names no IANA time zone (null means none)."""
    name = additional_data.get(TIMEZONE_KEY)
    if name is not None and zone_named(name) is None:
        shown = repr(name) if len(repr(name)) <= 80 else f"{repr(name)[:77]}..."
        raise ValueError(
            f"additional_data.{TIMEZONE_KEY}: {shown} is not an IANA time zone name "
            "(like Europe/Paris or UTC)"
        )


def sip_endpoint_of(external_id: Mapping[str, Any] | None) -> str:
    """The session's SIP endpoint: external_id's `sip_endpoint` or `sip` value; empty if none."""
    for key in SIP_ENDPOINT_KEYS:
        value = (external_id or {}).get(key)
        if isinstance(value, str) and value:
            return value
    return ""


def template_values(
    agent_variables: dict[str, Any],
    additional_data: dict[str, Any],
    channel: str,
    now: datetime,
    external_id: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Built-ins (`now`, `date`, `time`, `weekday`, `timezone`, in the session's
    `additional_data["timezone"]` if it names an IANA zone, else UTC), then the agent's
    defaults, then the session's `additional_data`, then the reserved keys the server sets
    (`channel`, `sip_endpoint` from the session's external_id)."""
    zone = zone_named(additional_data.get(TIMEZONE_KEY))
    zone_name = str(additional_data[TIMEZONE_KEY]) if zone is not None else "UTC"
    local = now.astimezone(zone or ZoneInfo("UTC"))
    builtins = {
        "now": local.isoformat(timespec="seconds"),
        "date": local.date().isoformat(),
        "time": local.strftime("%H:%M"),
        "weekday": local.strftime("%A"),
        TIMEZONE_KEY: zone_name,
    }
    reserved = {"channel": channel, "sip_endpoint": sip_endpoint_of(external_id)}
    return {**builtins, **agent_variables, **additional_data, **reserved}


def render_for_caller(
    field: str, template: str, values: dict[str, Any], max_chars: int
) -> tuple[str, list[str]]:
    """Render one of an agent's templates where a caller is waiting: a rendering past
    `max_chars` is the caller's mistake (422 naming the field), found before any turn runs."""
    try:
        return render_template(template, values, max_chars)
    except TemplateTooLarge as error:
        raise InvalidInput(f"the agent's {field} {error}") from None


def context_opened(
    additional_data: Mapping[str, Any], channel: str, external_id: Mapping[str, Any] | None
) -> dict[str, Any]:
    """What the `context.set` audit event records of a session's context at open: the
    `additional_data` variable names and the server's reserved values. Never the client's
    values, which may be personal data; the SIP endpoint is the caller's address, so only
    whether one was set."""
    return {
        "variables": sorted(additional_data),
        "channel": channel,
        "sip_endpoint": bool(sip_endpoint_of(external_id)),
    }


def context_changes(
    before: Mapping[str, Any], after: Mapping[str, Any]
) -> dict[str, list[str]] | None:
    """The variable names `after` adds to, removes from or changes in `before` (names only,
    sorted), or None if the two are the same. Values compare as canonical JSON, so `1` and
    `true` differ and key order inside a value does not matter."""

    def canonical(value: Any) -> str:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    changes = {
        "added": sorted(after.keys() - before.keys()),
        "removed": sorted(before.keys() - after.keys()),
        "changed": sorted(
            key
            for key in before.keys() & after.keys()
            if canonical(before[key]) != canonical(after[key])
        ),
    }
    return changes if any(changes.values()) else None
