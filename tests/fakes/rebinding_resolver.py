"""A DNS stand-in for rebinding attacks, handed to the worker as its resolver: each name it
knows resolves to one address the first time it is asked and to another ever after, like a
hostile name server with a zero TTL. Names it does not know go to the system resolver."""

from __future__ import annotations

import ipaddress
from collections import Counter
from dataclasses import dataclass, field

from src.tools.url_guard import IPAddress, system_resolver


@dataclass
class RebindingResolver:
    first: str
    later: str
    names: set[str] = field(default_factory=set)
    asked: Counter[str] = field(default_factory=Counter)

    def name(self, label: str) -> str:
        """A new name this resolver answers for."""
        host = f"{label}.rebind.test"
        self.names.add(host)
        return host

    async def __call__(self, host: str, port: int) -> list[IPAddress]:
        if host not in self.names:
            return await system_resolver(host, port)
        self.asked[host] += 1
        answer = self.first if self.asked[host] == 1 else self.later
        return [ipaddress.ip_address(answer)]
