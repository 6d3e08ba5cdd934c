"""The Celery app of the Acme site, as in the SUM boilerplate: `celery -A acme worker`."""
import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "acme.settings.production")

app = Celery("acme")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
