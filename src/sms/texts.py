"""Cutting a message into texts: Twilio takes at most 1,600 characters in one Body."""

from __future__ import annotations

MAX_TEXT_CHARS = 1600


def text_parts(body: str, limit: int = MAX_TEXT_CHARS) -> list[str]:
    """`body` in parts of at most `limit` characters, cut at the last whitespace before the
    limit when there is one in the second half of the part (else mid-word); no part is empty
    and joining the parts gives back `body` exactly."""
    parts: list[str] = []
    rest = body
    while len(rest) > limit:
        cut = max(rest.rfind(" ", 0, limit), rest.rfind("\n", 0, limit))
        cut = cut + 1 if cut >= limit // 2 else limit
        parts.append(rest[:cut])
        rest = rest[cut:]
    if rest or not parts:
        parts.append(rest)
    return parts
