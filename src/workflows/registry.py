"""Every workflow Parley runs: the worker registers these and replay checks histories against
them, so a new workflow cannot be registered in one and forgotten in the other."""

from __future__ import annotations

from src.workflows.chat_session import ChatSessionWorkflow
from src.workflows.session_analysis import SessionAnalysisWorkflow
from src.workflows.stateless_finish import StatelessFinishWorkflow
from src.workflows.stateless_turn import StatelessTurnWorkflow
from src.workflows.webhook_delivery import WebhookDeliveryWorkflow

WORKFLOWS: tuple[type, ...] = (
    ChatSessionWorkflow,
    StatelessTurnWorkflow,
    StatelessFinishWorkflow,
    SessionAnalysisWorkflow,
    WebhookDeliveryWorkflow,
)
