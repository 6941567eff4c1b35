"""The operator's allow-list of MCP stdio command lines (PARLEY_MCP_COMMANDS).

An entry is a whole argv pattern: a JSON list of strings, matched element by element against
the agent's `command`, same length. Inside an element, `{name}` is a named hole: it matches
one run of 1 to 200 characters from `A-Z a-z 0-9 _ . : @ + = , / -` that does not start with
`-` or `/` and holds no `..`, so a hole can never become an option, an absolute path or a way
up the tree. `{{` and `}}` stand for literal braces. The first element (the program: a name
looked up on PATH, or an absolute path) takes no holes. Examples:

    [["mcp-server-time"], ["npx", "-y", "@modelcontextprotocol/server-{pkg}"]]

The setting is that JSON list, or, for the old form, a comma list of bare commands, each
meaning the one-element argv `[command]` (no arguments).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

HOLE_VALUE = r"(?![-/])(?:(?!\.\.)[A-Za-z0-9_.:@+=,/-]){1,200}"
_TOKEN = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}|[{}]|[^{}]+")


class McpCommandsInvalid(ValueError):
    """PARLEY_MCP_COMMANDS cannot be parsed."""


@dataclass(frozen=True)
class ArgvPattern:
    """One allowed command line: a literal program, then one regex per argument."""

    text: tuple[str, ...]
    _arguments: tuple[re.Pattern[str], ...]

    @classmethod
    def parse(cls, argv: Sequence[str]) -> ArgvPattern:
        if not argv or not all(isinstance(part, str) and part for part in argv):
            raise McpCommandsInvalid(
                f"an MCP command pattern must be a non-empty list of non-empty strings: {argv!r}"
            )
        program, *arguments = argv
        if "{" in program or "}" in program:
            raise McpCommandsInvalid(
                f"the program of an MCP command pattern takes no holes: {program!r}"
            )
        return cls(tuple(argv), tuple(_element_regex(element) for element in arguments))

    def matches(self, command: Sequence[str]) -> bool:
        if len(command) != len(self.text) or command[0] != self.text[0]:
            return False
        return all(
            regex.fullmatch(argument) is not None
            for regex, argument in zip(self._arguments, command[1:], strict=True)
        )


def _element_regex(element: str) -> re.Pattern[str]:
    parts: list[str] = []
    for token in _TOKEN.finditer(element):
        text = token.group(0)
        if token.group(1) is not None:
            parts.append(HOLE_VALUE)
        elif text in ("{{", "}}"):
            parts.append(re.escape(text[0]))
        elif text in ("{", "}"):
            raise McpCommandsInvalid(
                f"a lone {text!r} in the MCP command pattern element {element!r} "
                "(holes are {name}; literal braces are {{ and }})"
            )
        else:
            parts.append(re.escape(text))
    return re.compile("".join(parts))


@dataclass(frozen=True)
class McpCommandAllowlist:
    patterns: tuple[ArgvPattern, ...] = ()

    @classmethod
    def parse(cls, setting: str) -> McpCommandAllowlist:
        """The JSON list of argv patterns, or a comma list of bare commands (exact argv)."""
        setting = setting.strip()
        if not setting.startswith("["):
            return cls.of([c.strip()] for c in setting.split(",") if c.strip())
        try:
            entries = json.loads(setting)
        except json.JSONDecodeError as error:
            message = f"PARLEY_MCP_COMMANDS is not valid JSON: {error.msg}"
            raise McpCommandsInvalid(message) from None
        if not isinstance(entries, list) or not all(isinstance(e, list) for e in entries):
            raise McpCommandsInvalid("PARLEY_MCP_COMMANDS must be a JSON list of argv lists")
        return cls.of(entries)

    @classmethod
    def of(cls, patterns: Iterable[Sequence[str]]) -> McpCommandAllowlist:
        return cls(tuple(ArgvPattern.parse(argv) for argv in patterns))

    def allows(self, command: Sequence[str]) -> bool:
        return any(pattern.matches(command) for pattern in self.patterns)

    def with_pattern(self, argv: Sequence[str]) -> McpCommandAllowlist:
        if any(pattern.text == tuple(argv) for pattern in self.patterns):
            return self
        return McpCommandAllowlist((*self.patterns, ArgvPattern.parse(argv)))

    def setting(self) -> str:
        """The value of PARLEY_MCP_COMMANDS that parses back to this allow-list."""
        return json.dumps([list(pattern.text) for pattern in self.patterns])
