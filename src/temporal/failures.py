"""The failure types Parley's workflows and activities raise (`ApplicationError.type`).

They are persisted API: recorded in workflow histories, named in retry policies as
non-retryable, and mapped by the API to HTTP statuses. Never rename one.
"""

from __future__ import annotations

from enum import StrEnum


class FailureType(StrEnum):
    # A session refuses an update (mapped to HTTP statuses by the API).
    SESSION_FINAL = "SessionFinal"
    DRAINING = "Draining"  # the session is handing over to its next run: retry
    INVALID_MESSAGE = "InvalidMessage"
    MESSAGE_TOO_LARGE = "MessageTooLarge"
    TURN_FAILED = "TurnFailed"
    OPEN_FAILED = "OpenFailed"
    # An operator action the session's mode does not allow (not taken over, held by another).
    MODE_CONFLICT = "ModeConflict"
    # A decision on a tool call that is not waiting for one.
    APPROVAL_NOT_PENDING = "ApprovalNotPending"
    # Activities: the caller's own errors, never retried.
    ENDPOINT_BUSY = "EndpointBusy"
    LLM_REJECTED = "LLMRequestRejected"
    PROMPT_TOO_LARGE = "PromptTooLarge"
    TOOL_DISCOVERY_FAILED = "ToolDiscoveryFailed"
    TOOL_REFUSED = "ToolRefused"
    WEBHOOK_REJECTED = "WebhookRejected"
    # The session's phone number was deleted or moved: its texts cannot be sent.
    SMS_NUMBER_UNKNOWN = "SmsNumberUnknown"
    # Twilio was busy, failed or did not answer (retried; never a refusal, which is recorded).
    SMS_PROVIDER_UNAVAILABLE = "SmsProviderUnavailable"
