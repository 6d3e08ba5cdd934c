"""sum-core's background tasks, run by the site's Celery worker (`celery -A <project> worker`).

Producing is best effort: a lost notification must never fail a contact-form
POST, so `enqueue` gives up at once when the broker is unset or down.
"""

import logging

from celery import shared_task
from django.conf import settings

log = logging.getLogger(__name__)


@shared_task(name="sum_core.notify")
def notify(task):
    log.warning("sum_core task done: %s", task)
    return task


def enqueue(task):
    if not (getattr(settings, "CELERY_BROKER_URL", "") or ""):
        log.warning("CELERY_BROKER_URL is empty; dropped task %s", task)
        return False
    try:
        notify.apply_async(args=[task], retry=False)
        return True
    except Exception as exc:  # noqa: BLE001 - any broker failure: drop the task, keep the page
        log.warning("could not enqueue task %s: %s", task, exc)
        return False
