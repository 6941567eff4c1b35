"""The variables an agent's templates (system prompt, first message) are rendered with."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

TIMEZONE_KEY = "timezone"


def template_values(
    agent_variables: dict[str, Any],
    additional_data: dict[str, Any],
    channel: str,
    now: datetime,
    sip_endpoint: str | None = None,
) -> dict[str, Any]:
    """Built-ins (`now`, `date`, `time`, `weekday`, `timezone`, in the session's
    `additional_data["timezone"]` if it names an IANA zone, else UTC), then the agent's
    defaults, then the session's `additional_data`, then the reserved keys the server sets."""
    zone_name = str(additional_data.get(TIMEZONE_KEY) or "UTC")
    try:
        zone = ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError):
        zone_name, zone = "UTC", ZoneInfo("UTC")
    local = now.astimezone(zone)
    builtins = {
        "now": local.isoformat(timespec="seconds"),
        "date": local.date().isoformat(),
        "time": local.strftime("%H:%M"),
        "weekday": local.strftime("%A"),
        TIMEZONE_KEY: zone_name,
    }
    reserved = {"channel": channel, "sip_endpoint": sip_endpoint}
    return {**builtins, **agent_variables, **additional_data, **reserved}
