"""Tool calls that wait for an operator's approval (a webhook tool with `requires_approval`).

The turn parks on a workflow condition with a timer, so the wait is durable: it survives
restarts of the worker and of the Temporal server and may last as long as the agent's
`approval_timeout_seconds`. A decision arrives as the `decide_approval` update; no decision in
time refuses the call by itself. Either way the model reads what happened as the tool's
result. A turn hands over to a new run only when it is done, so nothing here is carried.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel
from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from src.domain import Operator, PendingApproval
    from src.llm.types import LLMToolCall


class ApprovalDecision(BaseModel):
    tool_call_id: str
    approved: bool
    note: str | None = None
    operator: Operator | None = None
    session_id: str | None = None
    # Nobody decided within the agent's approval_timeout_seconds.
    timed_out: bool = False


def refusal_result(decision: ApprovalDecision) -> str:
    """What the model reads instead of the tool's answer."""
    if decision.timed_out:
        return "error: nobody approved this call in time, so it was not made"
    note = f": {decision.note}" if decision.note else ""
    return f"error: an operator refused this call, so it was not made{note}"


class ToolApprovals:
    def __init__(self) -> None:
        self.pending: dict[str, PendingApproval] = {}
        self._decided: dict[str, ApprovalDecision] = {}

    async def wait(self, call: LLMToolCall, timeout_seconds: int) -> ApprovalDecision:
        self.pending[call.id] = PendingApproval(
            tool_call_id=call.id,
            name=call.name,
            arguments=call.arguments,
            requested_time=workflow.now(),
        )
        try:
            await workflow.wait_condition(
                lambda: call.id in self._decided,
                timeout=timedelta(seconds=timeout_seconds),
                timeout_summary=f"approval of {call.name}",
            )
        except TimeoutError:
            self._decided[call.id] = ApprovalDecision(
                tool_call_id=call.id, approved=False, timed_out=True
            )
        del self.pending[call.id]
        return self._decided.pop(call.id)

    def decide(self, decision: ApprovalDecision) -> None:
        self._decided[decision.tool_call_id] = decision

    def refuse_all(self, note: str) -> None:
        for tool_call_id in self.pending:
            if tool_call_id not in self._decided:
                self.decide(ApprovalDecision(tool_call_id=tool_call_id, approved=False, note=note))

    def is_pending(self, tool_call_id: str) -> bool:
        return tool_call_id in self.pending and tool_call_id not in self._decided
