"""How long each kind of activity may take and how it is retried, in one place.

Every option set is the SDK's typed `ActivityConfig` (or `LocalActivityConfig`), spread into
`workflow.execute_activity_method(..., **OPTIONS)`. Failures that are the caller's own (a
refused tool call, a rejected model request) are non-retryable by their `FailureType`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TypeVar

from temporalio.common import RetryPolicy
from temporalio.workflow import ActivityConfig, LocalActivityConfig

from src.temporal.failures import FailureType

# Database writes retry for a long time: an unreachable database delays persistence, it
# never loses it. Only a constraint violation (a real conflict) stops the retries.
_STORE_RETRY_POLICY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    non_retryable_error_types=[FailureType.ENDPOINT_BUSY],
)

# The writes heartbeat: a worker killed mid-write (a write waiting on a lock, say) is noticed
# after 10 s, not after the whole start-to-close timeout.
STORE = ActivityConfig(
    start_to_close_timeout=timedelta(seconds=30),
    heartbeat_timeout=timedelta(seconds=10),
    retry_policy=_STORE_RETRY_POLICY,
)

# A turn's messages are written by a local activity inside the workflow task that answers the
# turn: no activity task and no extra workflow task on the server per turn, whose persistence
# is what limits turns/s under load (docs/benchmarks.md). Past
# `local_retry_threshold` the retries wait on server timers, so an unreachable database delays
# the write, never the reply.
LOCAL_STORE = LocalActivityConfig(
    start_to_close_timeout=timedelta(seconds=10),
    retry_policy=_STORE_RETRY_POLICY,
    local_retry_threshold=timedelta(seconds=2),
)

# The call heartbeats, so a worker that dies mid-call is noticed within seconds and the turn
# is retried elsewhere, not after the whole start-to-close timeout.
LLM = ActivityConfig(
    start_to_close_timeout=timedelta(seconds=120),
    heartbeat_timeout=timedelta(seconds=10),
    schedule_to_close_timeout=timedelta(minutes=10),
    retry_policy=RetryPolicy(
        initial_interval=timedelta(milliseconds=500),
        backoff_coefficient=2.0,
        maximum_interval=timedelta(seconds=30),
        non_retryable_error_types=[FailureType.LLM_REJECTED],
    ),
)

# A tool call is retried a few times; a refusal (the caller's own error) never.
_TOOL_RETRY_POLICY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=6,
    non_retryable_error_types=[FailureType.TOOL_REFUSED],
)

# A webhook tool: the call's own timeout is at most 120 s (the agent's setting).
WEBHOOK_TOOL = ActivityConfig(
    start_to_close_timeout=timedelta(seconds=150),
    heartbeat_timeout=timedelta(seconds=5),
    retry_policy=_TOOL_RETRY_POLICY,
)

MCP_DISCOVERY = ActivityConfig(
    start_to_close_timeout=timedelta(seconds=120),
    heartbeat_timeout=timedelta(seconds=10),
    retry_policy=RetryPolicy(
        initial_interval=timedelta(seconds=1),
        backoff_coefficient=2.0,
        maximum_attempts=3,
        non_retryable_error_types=[FailureType.TOOL_DISCOVERY_FAILED],
    ),
)

# Retries are for failures before the call is sent; after, the activity returns a result.
# Start-to-close outlasts the longest server timeout (300 s) plus spawn and shutdown.
MCP_CALL = ActivityConfig(
    start_to_close_timeout=timedelta(seconds=330),
    heartbeat_timeout=timedelta(seconds=5),
    retry_policy=_TOOL_RETRY_POLICY,
)

# Texts: 429s, 5xx and a Twilio that does not answer are retried with backoff; a refusal is
# recorded on the part by the activity, which then returns. Every attempt first checks what an
# earlier one sent (src/activities/sms.py), so retrying never texts twice. The heartbeat makes
# a worker that dies mid-send be noticed in seconds; start-to-close covers a long message's
# parts (each one or two calls of at most 15 s). Past an hour the reply is stale for the
# person waiting on it, and the workflow hears of the failure instead.
SMS_SEND = ActivityConfig(
    start_to_close_timeout=timedelta(minutes=2),
    heartbeat_timeout=timedelta(seconds=10),
    schedule_to_close_timeout=timedelta(hours=1),
    retry_policy=RetryPolicy(
        initial_interval=timedelta(seconds=1),
        backoff_coefficient=2.0,
        maximum_interval=timedelta(minutes=2),
        non_retryable_error_types=[FailureType.SMS_NUMBER_UNKNOWN],
    ),
)

ANALYSIS = ActivityConfig(
    start_to_close_timeout=timedelta(minutes=5),
    heartbeat_timeout=timedelta(seconds=10),
    schedule_to_close_timeout=timedelta(minutes=30),
    retry_policy=RetryPolicy(
        initial_interval=timedelta(seconds=1),
        backoff_coefficient=2.0,
        maximum_interval=timedelta(seconds=60),
    ),
)

# The longest wait between two delivery attempts of a completion webhook.
WEBHOOK_MAXIMUM_RETRY_INTERVAL = timedelta(minutes=30)


def webhook_delivery(retry_window_seconds: float, retry_initial_seconds: float) -> ActivityConfig:
    """A completion webhook is retried with backoff for the agent's retry window; a receiver
    that refuses the event (a 4xx) is not asked again."""
    return ActivityConfig(
        start_to_close_timeout=timedelta(seconds=60),
        heartbeat_timeout=timedelta(seconds=10),
        schedule_to_close_timeout=timedelta(seconds=retry_window_seconds),
        retry_policy=RetryPolicy(
            initial_interval=timedelta(seconds=retry_initial_seconds),
            backoff_coefficient=2.0,
            maximum_interval=WEBHOOK_MAXIMUM_RETRY_INTERVAL,
            non_retryable_error_types=[FailureType.WEBHOOK_REJECTED],
        ),
    )


_Config = TypeVar("_Config", ActivityConfig, LocalActivityConfig)


def titled(config: _Config, summary: str) -> _Config:
    """The options with the summary the Temporal UI shows for this one call."""
    titled_config: _Config = {**config, "summary": summary}
    return titled_config
