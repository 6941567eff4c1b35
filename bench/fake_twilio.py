"""The tests' fake Twilio REST API (tests/fakes/twilio_server.py) as its own process on
loopback, with one account, so the texts Parley sends in the scale benchmark cost the
benchmark's own process nothing. It keeps no request log (only the messages it accepted)."""

from __future__ import annotations

import argparse

import uvicorn

from bench.fake_llm import ForgetfulLog
from tests.fakes.twilio_server import FakeTwilio


def main() -> None:
    parser = argparse.ArgumentParser(description="fake Twilio REST API for benchmarks")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--account-sid", required=True)
    parser.add_argument("--auth-token", required=True)
    args = parser.parse_args()
    fake = FakeTwilio()
    fake.requests = ForgetfulLog()
    fake.add_account(args.account_sid, args.auth_token)
    uvicorn.run(fake.app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
