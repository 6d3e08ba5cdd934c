"""GET /health/: is this release able to serve traffic?

status is "unhealthy" (HTTP 503) when the database or the cache fails,
"degraded" (HTTP 200) when only the Celery broker fails, else "ok" (HTTP 200).
"""

import os
import time
from datetime import datetime, timezone

import redis
from django.conf import settings
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.cache import never_cache

REDIS_TIMEOUT = 1.0


def _timed(fn):
    start = time.monotonic()
    try:
        result = {"ok": True, **(fn() or {})}
    except Exception as exc:  # a health check reports every failure, whatever it is
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    result["latency_ms"] = round((time.monotonic() - start) * 1000, 1)
    return result


def check_db():
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        (one,) = cursor.fetchone()
    if one != 1:
        raise RuntimeError(f"SELECT 1 returned {one!r}")
    return {"vendor": connection.vendor}


def _redis_ping(setting):
    url = getattr(settings, setting, "") or ""
    if not url:
        raise RuntimeError(f"{setting} is not set")
    client = redis.Redis.from_url(
        url, socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT
    )
    try:
        if not client.ping():
            raise RuntimeError("PING did not return PONG")
    finally:
        client.close()
    return {}


def check_cache():
    return _redis_ping("REDIS_URL")


def check_celery():
    return _redis_ping("CELERY_BROKER_URL")


def run_checks():
    return {
        "db": _timed(check_db),
        "cache": _timed(check_cache),
        "celery": _timed(check_celery),
    }


def overall_status(checks):
    if not (checks["db"]["ok"] and checks["cache"]["ok"]):
        return "unhealthy"
    if not all(check["ok"] for check in checks.values()):
        return "degraded"
    return "ok"


@never_cache
def health(request):
    checks = run_checks()
    status = overall_status(checks)
    body = {
        "status": status,
        "version": {
            "git_sha": os.environ.get("GIT_SHA") or "unknown",
            "build": os.environ.get("BUILD_ID") or "unknown",
        },
        "checks": checks,
        "timestamp": datetime.now(timezone.utc).isoformat(),
    }
    return JsonResponse(body, status=503 if status == "unhealthy" else 200)
