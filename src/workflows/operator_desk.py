"""Who answers a session, the agent or a human operator who took it over, and the durable
timers of the agent's `human_handoff` setting.

The desk holds the session's mode (an operator, or none: the agent answers), whether the agent
asked for help, the whispers waiting for the agent's next turn, and what the agent owes: a
reply with no new user message (after a hand-back that leaves a user message unanswered, or a
whisper with `reply_now`). Its timers are workflow timers, so they survive restarts of
everything and are carried across continue-as-new as deadlines: help requested and no
takeover within `wait_seconds` → `help_unanswered` is due; a user message an operator left
unanswered for `operator_idle_seconds` → `operator_idle` is due. The session acts on what is
due (`duty`) in its main loop.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from enum import StrEnum

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from src.domain import HumanHandoff, Operator, SessionMode
    from src.workflows.chat_session_models import CarriedState, DeskState


class Duty(StrEnum):
    HELP_UNANSWERED = "help_unanswered"  # the holding message and its event
    OPERATOR_IDLE = "operator_idle"  # the agent takes the session back
    REPLY = "reply"  # the agent answers without a new user message


class OperatorDesk:
    def __init__(self, carried: CarriedState | None, handoff: HumanHandoff | None) -> None:
        state = DeskState()
        if carried is not None:
            state = carried.desk or DeskState(help_requested=carried.help_requested)
        self.state = state
        self._handoff = handoff or HumanHandoff()
        self._fired: set[Duty] = set()
        self._timers: dict[Duty, asyncio.Task[None]] = {}
        # A run's timers start from the deadlines the previous run carried.
        if state.help_deadline is not None:
            self._arm(Duty.HELP_UNANSWERED, state.help_deadline)
        if state.idle_deadline is not None:
            self._arm(Duty.OPERATOR_IDLE, state.idle_deadline)

    @property
    def operator(self) -> Operator | None:
        return self.state.operator

    @property
    def mode(self) -> SessionMode:
        return SessionMode.AI if self.state.operator is None else SessionMode.HUMAN

    def holds_session(self) -> bool:
        """An operator holds the session: the agent does not answer, the TTL does not run."""
        return self.state.operator is not None

    def duty(self) -> Duty | None:
        """What the session owes now, besides answering its inbox."""
        for fired in (Duty.OPERATOR_IDLE, Duty.HELP_UNANSWERED):
            if fired in self._fired:
                return fired
        if self.state.reply_due and not self.holds_session():
            return Duty.REPLY
        return None

    # ---- what happens ---------------------------------------------------------------------

    def help_requested(self, reason: str) -> None:
        self.state.help_requested = True
        self.state.help_reason = reason
        wait = self._handoff.wait_seconds
        if (
            wait is not None
            and not self.state.help_unanswered
            and Duty.HELP_UNANSWERED not in self._timers
        ):
            self.state.help_deadline = workflow.now() + timedelta(seconds=wait)
            self._arm(Duty.HELP_UNANSWERED, self.state.help_deadline)

    def help_unanswered_done(self) -> None:
        self._fired.discard(Duty.HELP_UNANSWERED)
        self.state.help_deadline = None
        self.state.help_unanswered = True

    def take_over(self, operator: Operator) -> None:
        self.state.operator = operator
        self.state.help_requested = False
        self.state.help_unanswered = False
        self.state.help_deadline = None
        self._disarm(Duty.HELP_UNANSWERED)

    def user_waiting(self) -> None:
        """A user message came while an operator holds the session."""
        self.state.unanswered = True
        idle = self._handoff.operator_idle_seconds
        if idle is not None and Duty.OPERATOR_IDLE not in self._timers:
            self.state.idle_deadline = workflow.now() + timedelta(seconds=idle)
            self._arm(Duty.OPERATOR_IDLE, self.state.idle_deadline)

    def operator_answered(self) -> None:
        self.state.unanswered = False
        self.state.idle_deadline = None
        self._disarm(Duty.OPERATOR_IDLE)

    def hand_back(self) -> Operator | None:
        """The agent answers again; a user message left unanswered is answered now."""
        operator, self.state.operator = self.state.operator, None
        self.state.idle_deadline = None
        self._disarm(Duty.OPERATOR_IDLE)
        if self.state.unanswered:
            self.state.unanswered = False
            self.state.reply_due = True
        return operator

    def whisper(self, guidance: str, reply_now: bool) -> None:
        self.state.guidance.append(guidance)
        if reply_now:
            self.state.reply_due = True

    def replied(self, guidance_used: int, owed_at_start: bool) -> None:
        """The agent answered a turn that read the first `guidance_used` whispers; it pays
        what was owed when it started (a reply owed since then is still owed)."""
        del self.state.guidance[:guidance_used]
        if owed_at_start:
            self.state.reply_due = False

    def close(self) -> None:
        for duty in list(self._timers):
            self._disarm(duty)

    # ---- timers ---------------------------------------------------------------------------

    def _arm(self, duty: Duty, deadline: datetime) -> None:
        self._timers[duty] = asyncio.create_task(self._fire_at(duty, deadline))

    def _disarm(self, duty: Duty) -> None:
        self._fired.discard(duty)
        timer = self._timers.pop(duty, None)
        if timer is not None:
            timer.cancel()

    async def _fire_at(self, duty: Duty, deadline: datetime) -> None:
        left = deadline - workflow.now()
        if left > timedelta(0):
            await workflow.sleep(left, summary=duty.value.replace("_", " "))
        self._timers.pop(duty, None)
        self._fired.add(duty)
