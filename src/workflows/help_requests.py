"""The agent's requestHuman call: the reason it gives, and what the model is told back."""

from __future__ import annotations

import json

# What the model reads after asking: its reply still goes to the user.
HELP_REQUESTED = (
    "A human operator has been asked to join. Tell the user so, and keep helping them meanwhile."
)
_REASON_CHARS = 500


def call_reason(arguments: str) -> str:
    """The `reason` argument of a call (requestHuman, a handoff), clipped; empty when the
    model gave none."""
    try:
        parsed = json.loads(arguments)
    except json.JSONDecodeError:
        return ""
    reason = parsed.get("reason") if isinstance(parsed, dict) else None
    return reason[:_REASON_CHARS] if isinstance(reason, str) else ""
