"""WebhookDeliveryWorkflow: one per webhook event, so a receiver that is down for hours
delays nobody: the session that raised the event finishes (and its endpoint can take a new
session) while its events are still being delivered."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from src.activities.session_store import STORE_ACTIVITY_OPTIONS
    from src.activities.webhooks import (
        MAXIMUM_RETRY_INTERVAL,
        WEBHOOK_REJECTED,
        DeliveryRecord,
        WebhookActivities,
        WebhookDelivery,
    )

# Patch ids (workflow.patched): persisted in history, never rename or reuse one.
# An accepted delivery is recorded by an activity of its own, so a failing audit write is
# retried without posting the event again.
RECORD_DELIVERY_APART = "record-delivery-apart"


@workflow.defn(name="WebhookDeliveryWorkflow")
class WebhookDeliveryWorkflow:
    @workflow.run
    async def run(self, delivery: WebhookDelivery) -> bool:
        """True once the receiver accepted the event; False if it refused it or the retry
        window ran out (recorded as `webhook.failed`)."""
        if workflow.patched(RECORD_DELIVERY_APART):
            delivery = delivery.model_copy(update={"records_delivery": True})
        try:
            outcome = await workflow.execute_activity_method(
                WebhookActivities.deliver,
                delivery,
                summary=f"deliver {delivery.event_type}",
                start_to_close_timeout=timedelta(seconds=60),
                heartbeat_timeout=timedelta(seconds=10),
                schedule_to_close_timeout=timedelta(seconds=delivery.retry_window_seconds),
                retry_policy=RetryPolicy(
                    initial_interval=timedelta(seconds=delivery.retry_initial_seconds),
                    backoff_coefficient=2.0,
                    maximum_interval=MAXIMUM_RETRY_INTERVAL,
                    non_retryable_error_types=[WEBHOOK_REJECTED],
                ),
            )
        except ActivityError:
            await workflow.execute_activity_method(
                WebhookActivities.record_failure,
                delivery,
                summary=f"record failed {delivery.event_type}",
                **STORE_ACTIVITY_OPTIONS,
            )
            return False
        if outcome is not None:
            await workflow.execute_activity_method(
                WebhookActivities.record_delivery,
                DeliveryRecord(delivery=delivery, outcome=outcome),
                summary=f"record delivered {delivery.event_type}",
                **STORE_ACTIVITY_OPTIONS,
            )
        return True
