"""WSGI entry point: gunicorn acme.wsgi:application"""
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "acme.settings.production")

application = get_wsgi_application()
