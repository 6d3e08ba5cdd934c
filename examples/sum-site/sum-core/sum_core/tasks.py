"""A tiny stand-in for Celery: tasks are strings pushed onto a Redis list.

The producer side is best effort (a lost notification must never fail a
contact-form POST); the consumer is the ``sum_worker`` management command.
"""

import logging

import redis
from django.conf import settings

log = logging.getLogger(__name__)

TASK_QUEUE = "sum:tasks"
SOCKET_TIMEOUT = 1.0


def broker_client(socket_timeout=SOCKET_TIMEOUT):
    url = getattr(settings, "CELERY_BROKER_URL", "") or ""
    if not url:
        return None
    return redis.Redis.from_url(
        url, socket_timeout=socket_timeout, socket_connect_timeout=SOCKET_TIMEOUT
    )


def enqueue(task):
    client = broker_client()
    if client is None:
        log.warning("CELERY_BROKER_URL is empty; dropped task %s", task)
        return False
    try:
        client.rpush(TASK_QUEUE, task)
        return True
    except redis.RedisError as exc:
        log.warning("could not enqueue task %s: %s", task, exc)
        return False
    finally:
        client.close()
