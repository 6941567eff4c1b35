"""A squad session's members handing the conversation to each other.

The active member's model asks for a handoff with one of its `handoff_to_<member>` functions;
the switch happens at the next model call of the turn (after the reply that asked, its other
tool calls made with the member that asked), so the user's next answer comes from the new
member, with its prompt, model and tools, reading the part of the transcript the handoff
chose: all of it, none (from the user's last message on), or the last n messages before it.
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from src.domain import HandoffDestination, LastMessages, Message, SessionAgent, Transfer
    from src.llm.types import LLMToolCall
    from src.workflows.chat_session_models import SquadState
    from src.workflows.help_requests import call_reason


class SquadHandoffs:
    def __init__(self, state: SquadState) -> None:
        self.state = state
        self._asked: tuple[HandoffDestination, str] | None = None

    @property
    def active(self) -> SessionAgent:
        return self.member(self.state.active)

    @property
    def lead(self) -> SessionAgent:
        """The first member: its settings (webhook, analysis) are the session's."""
        return self.state.members[0].agent

    def member(self, name: str) -> SessionAgent:
        return next(seat.agent for seat in self.state.members if seat.name == name)

    def freeze(self, name: str, agent: SessionAgent) -> None:
        for seat in self.state.members:
            if seat.name == name:
                seat.agent = agent

    def ask(self, call: LLMToolCall) -> str:
        """The active member's handoff call; what its model reads back."""
        destination = self.active.handoffs[call.name]
        self._asked = (destination, call_reason(call.arguments))
        return (
            f"The conversation goes to {destination.member} after this reply; "
            "they answer the user next. Say nothing more."
        )

    def switch_if_asked(self, transcript: list[Message], first_seq: int) -> Transfer | None:
        """At the next model call: the member asked for becomes the active one."""
        if self._asked is None:
            return None
        destination, reason = self._asked
        self._asked = None
        before = self.state.active
        self.state.active = destination.member
        self.state.visible_from = _visible_from(destination, transcript, first_seq)
        transfer = Transfer(
            from_member=before,
            to_member=destination.member,
            from_agent_id=self.member(before).id,
            to_agent_id=self.active.id,
            reason=reason,
            time=workflow.now(),
        )
        self.state.transfers.append(transfer)
        return transfer


def _visible_from(
    destination: HandoffDestination, transcript: list[Message], first_seq: int
) -> int:
    """The seq of the first message the next member reads. `transcript` is this run's
    messages (from `first_seq`), the handoff call last."""
    count = first_seq + len(transcript)
    context = destination.context
    if isinstance(context, LastMessages):
        return max(0, count - 1 - context.last_messages)
    if context == "none":
        users = [i for i, message in enumerate(transcript) if message.role == "user"]
        return first_seq + users[-1] if users else count - 1
    return 0
