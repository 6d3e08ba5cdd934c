"""Production settings: everything comes from the environment.

The app never serves /static/ or /media/ itself; Caddy does, from
DJANGO_STATIC_ROOT (filled by `manage.py collectstatic`) and DJANGO_MEDIA_ROOT.
"""
import os

from django.core.exceptions import ImproperlyConfigured

from .base import *  # noqa: F401,F403


def env(name, default=None, required=False):
    value = os.environ.get(name)
    if value is None or value == "":
        if required:
            raise ImproperlyConfigured(f"environment variable {name} is required")
        return default
    return value


def env_list(name):
    return [item.strip() for item in os.environ.get(name, "").split(",") if item.strip()]


DEBUG = False
SECRET_KEY = env("DJANGO_SECRET_KEY", required=True)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS")

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": env("DJANGO_DB_NAME", "acme"),
        "USER": env("DJANGO_DB_USER", "acme"),
        "PASSWORD": env("DJANGO_DB_PASSWORD", ""),
        "HOST": env("DJANGO_DB_HOST", "localhost"),
        "PORT": env("DJANGO_DB_PORT", "5432"),
        "CONN_MAX_AGE": int(env("DJANGO_DB_CONN_MAX_AGE", "0")),
        # Fail fast so /health/ answers "unhealthy" instead of hanging.
        "OPTIONS": {"connect_timeout": int(env("DJANGO_DB_CONNECT_TIMEOUT", "3"))},
    }
}

REDIS_URL = env("REDIS_URL", "")
CELERY_BROKER_URL = env("CELERY_BROKER_URL", "")
# A contact form never waits long for a broker that is down (the task is then dropped).
CELERY_BROKER_CONNECTION_TIMEOUT = 1
CELERY_BROKER_TRANSPORT_OPTIONS = {"socket_timeout": 1, "socket_connect_timeout": 1}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_IGNORE_RESULT = True

if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "OPTIONS": {"socket_timeout": 1, "socket_connect_timeout": 1},
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

STATIC_URL = "/static/"
STATIC_ROOT = env("DJANGO_STATIC_ROOT", str(BASE_DIR / "staticfiles"))  # noqa: F405
MEDIA_URL = "/media/"
MEDIA_ROOT = env("DJANGO_MEDIA_ROOT", str(BASE_DIR / "media"))  # noqa: F405
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    # Hashed names (main.<hash>.css) plus the unhashed originals; needs
    # `collectstatic` to have run, or templates using {% static %} fail.
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.ManifestStaticFilesStorage"},
}

# As in the real SUM boilerplate: redirect to HTTPS, and no SECURE_PROXY_SSL_HEADER.
# TLS ends at Caddy; the app server (gunicorn, which sumbg tells to trust the edge
# network's X-Forwarded-Proto) is what makes requests through the edge secure.
USE_X_FORWARDED_HOST = False
SECURE_SSL_REDIRECT = True
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
CSRF_TRUSTED_ORIGINS = [
    f"https://*{host}" if host.startswith(".") else f"https://{host}"
    for host in ALLOWED_HOSTS
    if host != "*"
]
# HSTS is Caddy's business; opt in here with SECURE_HSTS_SECONDS if wanted.
SECURE_HSTS_SECONDS = int(env("SECURE_HSTS_SECONDS", "0"))
if not SECURE_HSTS_SECONDS:
    SILENCED_SYSTEM_CHECKS = ["security.W004"]

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(process)d: %(message)s"},
    },
    "handlers": {
        "stdout": {"class": "logging.StreamHandler", "stream": "ext://sys.stdout", "formatter": "plain"},
    },
    "root": {"handlers": ["stdout"], "level": env("DJANGO_LOG_LEVEL", "INFO")},
    "loggers": {
        "django": {"handlers": ["stdout"], "level": env("DJANGO_LOG_LEVEL", "INFO"), "propagate": False},
    },
}
