"""The tests' fake OpenAI-compatible LLM (tests/fakes/llm_server.py) as its own process on
loopback, so its CPU is not the client's. It keeps no request log (a 1,000-turn session
would otherwise hold every transcript it was sent)."""

from __future__ import annotations

import argparse
from typing import Any

import uvicorn

from tests.fakes.llm_server import FakeLLM


class ForgetfulLog(list[Any]):
    """A fake's request log that keeps nothing."""

    def append(self, item: Any) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description="fake OpenAI-compatible LLM for benchmarks")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    fake = FakeLLM()
    fake.requests = ForgetfulLog()
    uvicorn.run(fake.app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
