"""WebhookDeliveryWorkflow: one per webhook event, so a receiver that is down for hours
delays nobody: the session that raised the event finishes (and its endpoint can take a new
session) while its events are still being delivered."""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from src.activities.webhooks import (
        DeliveryRecord,
        WebhookActivities,
        WebhookDelivery,
    )
    from src.workflows import activity_options


@workflow.defn(name="WebhookDeliveryWorkflow")
class WebhookDeliveryWorkflow:
    @workflow.run
    async def run(self, delivery: WebhookDelivery) -> bool:
        """True once the receiver accepted the event; False if it refused it or the retry
        window ran out (recorded as `webhook.failed`)."""
        try:
            outcome = await workflow.execute_activity_method(
                WebhookActivities.deliver,
                delivery,
                **activity_options.titled(
                    activity_options.webhook_delivery(
                        delivery.retry_window_seconds, delivery.retry_initial_seconds
                    ),
                    f"deliver {delivery.event_type}",
                ),
            )
        except ActivityError:
            await workflow.execute_activity_method(
                WebhookActivities.record_failure,
                delivery,
                **activity_options.titled(
                    activity_options.STORE, f"record failed {delivery.event_type}"
                ),
            )
            return False
        await workflow.execute_activity_method(
            WebhookActivities.record_delivery,
            DeliveryRecord(delivery=delivery, outcome=outcome),
            **activity_options.titled(
                activity_options.STORE, f"record delivered {delivery.event_type}"
            ),
        )
        return True
