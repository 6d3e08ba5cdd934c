"""A tiny stand-in for a Celery worker.

Loops forever doing BLPOP on the Redis list ``sum:tasks`` at CELERY_BROKER_URL
(5 s timeout per wait), logs every task it takes to stdout, and exits cleanly
(status 0) on SIGTERM or SIGINT.
"""

import signal
import sys
import time

import redis
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from sum_core import __version__
from sum_core.tasks import TASK_QUEUE

BLPOP_TIMEOUT = 5


class _Stop(Exception):
    pass


class Command(BaseCommand):
    help = "Take tasks from the Redis list sum:tasks and log them (a Celery stand-in)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--max-tasks", type=int, default=0,
            help="exit after this many tasks (0 = run forever)",
        )

    def _log(self, msg):
        self.stdout.write(f"sum_worker[{__version__}]: {msg}")
        self.stdout.flush()

    def handle(self, *args, max_tasks=0, **options):
        url = getattr(settings, "CELERY_BROKER_URL", "") or ""
        if not url:
            raise CommandError("CELERY_BROKER_URL is empty")

        stopping = {"signal": None}

        def on_signal(signum, frame):
            stopping["signal"] = signal.Signals(signum).name
            raise _Stop()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

        # The read timeout must exceed the BLPOP timeout, or every idle wait errors.
        client = redis.Redis.from_url(
            url, socket_timeout=BLPOP_TIMEOUT + 5, socket_connect_timeout=2
        )
        taken = 0
        self._log(f"waiting for tasks on {TASK_QUEUE}")
        try:
            while True:
                try:
                    item = client.blpop([TASK_QUEUE], timeout=BLPOP_TIMEOUT)
                except redis.RedisError as exc:
                    self._log(f"broker error: {exc}; retrying in 1 s")
                    time.sleep(1)
                    continue
                if item is None:
                    continue
                _queue, task = item
                taken += 1
                self._log(f"took task {task.decode('utf-8', 'replace')}")
                if max_tasks and taken >= max_tasks:
                    break
        except _Stop:
            self._log(f"got {stopping['signal']}, stopping after {taken} task(s)")
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            try:
                client.close()
            except Exception:
                pass
        sys.stdout.flush()
