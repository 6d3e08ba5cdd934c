"""The releases of the example SUM client site, as small differences.

The base trees are ``sum-core/`` (the sum-core Django app, at 0.6.3) and
``client/`` (the Acme client project) beside this file. Each release applies
an ordered list of LAYERS on top of them; build_repo.py then fills in the
sum-core version, builds the sum-core wheel, vendors it into the client tree,
pins it in requirements.txt, and commits and tags the client tree.

A layer is a dict with any of:
  "files": {path: text}               add or replace a whole file
  "edits": {path: [(old, new), ...]}  replace text that must occur exactly once
  "delete": [path, ...]               remove a file
Paths start with "sum-core/" or "client/".

Importing this module is cheap and has no side effects: ``RELEASES`` is the
ordered list of {"tag", "sum_core", "description", "layers", "good"} dicts.
"""

# ---------------------------------------------------------------------------
# sum-core 0.7.0: optional Lead.phone, new stylesheet.
# ---------------------------------------------------------------------------
PHONE = {
    "edits": {
        "sum-core/sum_core/models.py": [(
            "    message = models.TextField()\n",
            "    message = models.TextField()\n"
            "    # db_default keeps the column DEFAULT '' in the database, so the\n"
            "    # previous release (which knows nothing of phone) can still insert.\n"
            '    phone = models.CharField(max_length=40, blank=True, default="", db_default="")\n',
        )],
        "sum-core/sum_core/forms.py": [(
            'fields = ["name", "email", "message"]',
            'fields = ["name", "email", "phone", "message"]',
        )],
    },
    "files": {
        "sum-core/sum_core/migrations/0002_lead_phone.py": '''\
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("sum_core", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="lead",
            name="phone",
            field=models.CharField(blank=True, db_default="", default="", max_length=40),
        ),
    ]
''',
        "sum-core/sum_core/static/sum_core/css/main.css": '''\
/* sum-core base stylesheet */
body {
  color: #0b3d91;
  font-family: system-ui, sans-serif;
  margin: 2rem auto;
  max-width: 40rem;
}

form p label {
  display: block;
  font-weight: bold;
}

.sum-banner::after {
  content: "sum-core 0.7.0";
  display: block;
  padding: 0.25rem 0.5rem;
  background: #e8eef9;
}
''',
    },
}

# ---------------------------------------------------------------------------
# sum-core 0.7.1: a migration that adds a column, then fails.
# ---------------------------------------------------------------------------
BROKEN_MIGRATION = {
    "edits": {
        "sum-core/sum_core/models.py": [(
            '    phone = models.CharField(max_length=40, blank=True, default="", db_default="")\n',
            '    phone = models.CharField(max_length=40, blank=True, default="", db_default="")\n'
            "    fax = models.CharField(max_length=40, blank=True, null=True)\n",
        )],
    },
    "files": {
        "sum-core/sum_core/migrations/0003_lead_fax_broken.py": '''\
from django.db import migrations, models


def backfill_fax(apps, schema_editor):
    raise RuntimeError("deliberately broken migration in sum-core 0.7.1")


class Migration(migrations.Migration):

    dependencies = [
        ("sum_core", "0002_lead_phone"),
    ]

    # Runs in one transaction on PostgreSQL: the AddField is rolled back too.
    operations = [
        migrations.AddField(
            model_name="lead",
            name="fax",
            field=models.CharField(blank=True, max_length=40, null=True),
        ),
        migrations.RunPython(backfill_fax, migrations.RunPython.noop),
    ]
''',
    },
}

# ---------------------------------------------------------------------------
# Client: requirements.txt without gunicorn (the container cannot start).
# ---------------------------------------------------------------------------
NO_GUNICORN = {
    "edits": {
        "client/requirements.txt": [("gunicorn==23.0.0\n", "")],
    },
}

# ---------------------------------------------------------------------------
# sum-core 0.7.3: the homepage raises (HTTP 500); /health/ is fine.
# ---------------------------------------------------------------------------
HOMEPAGE_500 = {
    "edits": {
        "sum-core/sum_core/views.py": [(
            "    # The latest enquiry, as a real homepage might show it: a full-row read of\n"
            "    # Lead, so it selects every column this release's model knows of (and fails\n"
            "    # once a migration has dropped or renamed one of them).\n"
            "    latest_lead = Lead.objects.first()\n"
            '    return render(request, "sum_core/home.html", _context(latest_lead=latest_lead))\n',
            '    raise RuntimeError("deliberately broken homepage in sum-core 0.7.3")\n',
        )],
    },
}

# ---------------------------------------------------------------------------
# sum-core 0.7.4: /health/ turns unhealthy (503) once this worker process has
# been serving for more than SUM_BREAK_HEALTH_AFTER seconds (default 20),
# counted from the first request it served.
# ---------------------------------------------------------------------------
TURNS_UNHEALTHY = {
    "edits": {
        "sum-core/sum_core/apps.py": [(
            '    default_auto_field = "django.db.models.BigAutoField"\n',
            '    default_auto_field = "django.db.models.BigAutoField"\n'
            "\n"
            "    def ready(self):\n"
            "        from django.core.signals import request_started\n"
            "\n"
            "        from . import health\n"
            "\n"
            '        request_started.connect(health.note_request, dispatch_uid="sum_core.note_request")\n',
        )],
        "sum-core/sum_core/health.py": [
            ("REDIS_TIMEOUT = 1.0\n", '''\
REDIS_TIMEOUT = 1.0

# When this worker process served its first request (time.monotonic()).
_FIRST_REQUEST_AT = None


def note_request(**kwargs):
    global _FIRST_REQUEST_AT
    if _FIRST_REQUEST_AT is None:
        _FIRST_REQUEST_AT = time.monotonic()


def check_lifetime():
    """Deliberately fail once this process has served for too long."""
    note_request()
    limit = float(os.environ.get("SUM_BREAK_HEALTH_AFTER") or 20)
    age = time.monotonic() - _FIRST_REQUEST_AT
    if age > limit:
        raise RuntimeError(
            f"deliberately unhealthy in sum-core 0.7.4: pid {os.getpid()} has served "
            f"for {age:.1f} s > SUM_BREAK_HEALTH_AFTER={limit:g} s"
        )
    return {"age_s": round(age, 1), "limit_s": limit}
'''),
            ('        "celery": _timed(check_celery),\n',
             '        "celery": _timed(check_celery),\n'
             '        "lifetime": _timed(check_lifetime),\n'),
            ('    if not (checks["db"]["ok"] and checks["cache"]["ok"]):\n',
             '    if not (checks["db"]["ok"] and checks["cache"]["ok"] and checks["lifetime"]["ok"]):\n'),
        ],
    },
}

# ---------------------------------------------------------------------------
# sum-core 0.8.0: a stylesheet change only.
# ---------------------------------------------------------------------------
CSS_080 = {
    "edits": {
        "sum-core/sum_core/static/sum_core/css/main.css": [
            ("  color: #0b3d91;\n", "  color: #14532d;\n"),
            ('  content: "sum-core 0.7.0";\n', '  content: "sum-core 0.8.0";\n'),
            ("  background: #e8eef9;\n", "  background: #e7f5ec;\n"),
        ],
    },
}

# ---------------------------------------------------------------------------
# Client: sum-core from git, the way real SUM client repos pin it
# (``sum-core @ git+https://.../sum-core.git@vX.Y.Z#subdirectory=core``; build_repo.py
# writes that line for releases with "git_pin"), and Pillow, which Wagtail sites need.
# The URL's host does not exist (.invalid): a build reaches the sum-core repository
# only through a [build] git_url_rewrites entry pointing at a served copy of it
# (build_repo.py --core-repo DEST builds that repository, tags v<sum_core>).
# ---------------------------------------------------------------------------
SUM_CORE_GIT_URL = "https://git.sum-core.invalid/acme/sum-core.git"

GIT_PIN = {
    "edits": {
        "client/requirements.txt": [
            ("gunicorn==23.0.0\n", "gunicorn==23.0.0\nPillow==11.0.0\n"),
            ("# sum-core is not on PyPI: the wheel is vendored in vendor/ and installed with\n"
             "#   pip install --find-links vendor -r requirements.txt\n",
             "# sum-core comes from its (private) git repository, subdirectory core/.\n"),
        ],
    },
}

# ---------------------------------------------------------------------------
# Client: Pillow built from source (pip's --no-binary), as on a Python for which
# no wheel exists: the build stage needs a compiler and headers (site.toml
# [build] build_packages), the final image only the runtime libraries (packages).
# ---------------------------------------------------------------------------
PILLOW_SOURCE = {
    "edits": {
        "client/requirements.txt": [("Pillow==11.0.0\n", "--no-binary pillow\nPillow==11.0.0\n")],
    },
}

# ---------------------------------------------------------------------------
# Client: the repo ships its own Dockerfile, written the way a client would,
# declaring neither GIT_SHA nor BUILD_ID: sumbg builds with it (passing
# PYTHON_IMAGE and putting its CA bundle at .sumbg/ca.crt in the context) and
# sets GIT_SHA/BUILD_ID in the containers' environment itself, from the labels.
# ---------------------------------------------------------------------------
OWN_DOCKERFILE = {
    "files": {
        "client/Dockerfile": """\
# Acme's own image. (sumbg builds a repo's Dockerfile when it has one.)
ARG PYTHON_IMAGE=python:3.12-slim
FROM ${PYTHON_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 \\
    PATH=/venv/bin:$PATH
WORKDIR /app

# Dependencies first; sum-core is the wheel in vendor/. sumbg puts the CA bundle
# pip must trust (sumbg.toml [build] ca_bundle; empty when unset) at .sumbg/ca.crt.
COPY .sumbg/ca.crt /etc/acme-build-ca.crt
COPY requirements.txt /app/requirements.txt
COPY vendor/ /app/vendor/
RUN if [ -s /etc/acme-build-ca.crt ]; then export PIP_CERT=/etc/acme-build-ca.crt; fi \\
    && python3 -m venv /venv \\
    && /venv/bin/pip install --find-links /app/vendor -r /app/requirements.txt

RUN useradd --uid 1000 --user-group --home-dir /app --no-create-home app \\
    && mkdir -p /srv/static /srv/media && chown app:app /srv/static /srv/media
COPY --chown=app:app . /app/
USER app
EXPOSE 8000
CMD ["gunicorn", "acme.wsgi:application", "--bind", "0.0.0.0:8000"]
""",
    },
}

# ---------------------------------------------------------------------------
# sum-core 0.10.0: drops Lead.message at once (RemoveField in 0003). Not
# blue/green safe: the previous release's homepage selects the column (and its
# contact form inserts into it), so it fails as soon as this migration ran.
# Deployable only with a maintenance window (or by accepting the errors).
# ---------------------------------------------------------------------------
DROP_MESSAGE = {
    "edits": {
        "sum-core/sum_core/models.py": [("    message = models.TextField()\n", "")],
        "sum-core/sum_core/forms.py": [(
            'fields = ["name", "email", "phone", "message"]',
            'fields = ["name", "email", "phone"]',
        )],
        "sum-core/sum_core/admin.py": [(
            'search_fields = ("name", "email", "message")',
            'search_fields = ("name", "email")',
        )],
    },
    "files": {
        "sum-core/sum_core/migrations/0003_remove_lead_message.py": """\
from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ("sum_core", "0002_lead_phone"),
    ]

    # Drops the column in the same release that stops using it: the previous
    # release still selects Lead.message, so this breaks it once applied.
    operations = [
        migrations.RemoveField(
            model_name="lead",
            name="message",
        ),
    ]
""",
    },
}

# ---------------------------------------------------------------------------
# sum-core 0.10.1: renames Lead.email to Lead.email_address (RenameField in
# 0003; the contact form's field becomes email_address too). Not blue/green
# safe: the previous release selects (and inserts) "email", gone once migrated.
# ---------------------------------------------------------------------------
RENAME_EMAIL = {
    "edits": {
        "sum-core/sum_core/models.py": [
            ("    email = models.EmailField()\n", "    email_address = models.EmailField()\n"),
            ('return f"{self.name} <{self.email}>"', 'return f"{self.name} <{self.email_address}>"'),
        ],
        "sum-core/sum_core/forms.py": [(
            'fields = ["name", "email", "phone", "message"]',
            'fields = ["name", "email_address", "phone", "message"]',
        )],
        "sum-core/sum_core/admin.py": [
            ('list_display = ("name", "email", "created_at")', 'list_display = ("name", "email_address", "created_at")'),
            ('search_fields = ("name", "email", "message")', 'search_fields = ("name", "email_address", "message")'),
        ],
    },
    "files": {
        "sum-core/sum_core/migrations/0003_rename_lead_email.py": """\
from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ("sum_core", "0002_lead_phone"),
    ]

    # A rename in one step (ALTER TABLE ... RENAME COLUMN): the previous release
    # still reads and writes "email", so this breaks it once applied. The safe
    # way is add + copy + switch + drop over releases.
    operations = [
        migrations.RenameField(
            model_name="lead",
            old_name="email",
            new_name="email_address",
        ),
    ]
""",
    },
}

# ---------------------------------------------------------------------------
# sum-core 0.10.2: a non-atomic migration that adds Lead.source, then fails.
# Unlike 0.7.1's, its AddField is committed before the failure: run on the live
# database it would leave a half-applied migration behind (column there, the
# migration not recorded, so the next migrate fails on "already exists").
# ---------------------------------------------------------------------------
HALF_FAILING = {
    "edits": {
        "sum-core/sum_core/models.py": [(
            '    phone = models.CharField(max_length=40, blank=True, default="", db_default="")\n',
            '    phone = models.CharField(max_length=40, blank=True, default="", db_default="")\n'
            "    source = models.CharField(max_length=40, blank=True, null=True)\n",
        )],
    },
    "files": {
        "sum-core/sum_core/migrations/0003_lead_source_half_failing.py": """\
from django.db import migrations, models


def backfill_source(apps, schema_editor):
    raise RuntimeError("deliberately failing half way in sum-core 0.10.2")


class Migration(migrations.Migration):

    # Not atomic (as a big data migration or AddIndexConcurrently must be): on
    # PostgreSQL each operation commits on its own, so the AddField below is
    # committed before RunPython fails. Run against a live database this leaves
    # it half migrated: the source column exists, 0003 is not recorded as
    # applied, and the next `migrate` fails because the column already exists.
    atomic = False

    dependencies = [
        ("sum_core", "0002_lead_phone"),
    ]

    operations = [
        migrations.AddField(
            model_name="lead",
            name="source",
            field=models.CharField(blank=True, max_length=40, null=True),
        ),
        migrations.RunPython(backfill_source, migrations.RunPython.noop),
    ]
""",
    },
}

# ---------------------------------------------------------------------------
# sum-core 0.10.3 (on top of 0.10.0's drop-message): stops using Lead.phone and
# drops it in a "contract" migration marked run_after_switch = True. The
# previous release (0.10.0) still selects phone, so sumbg runs 0004 only after
# traffic moved to this release and its watch passed; before that the column
# stays, and its DEFAULT '' (db_default) lets this release insert without it.
# ---------------------------------------------------------------------------
DROP_PHONE_AFTER_SWITCH = {
    "edits": {
        "sum-core/sum_core/models.py": [(
            "    # db_default keeps the column DEFAULT '' in the database, so the\n"
            "    # previous release (which knows nothing of phone) can still insert.\n"
            '    phone = models.CharField(max_length=40, blank=True, default="", db_default="")\n',
            "",
        )],
        "sum-core/sum_core/forms.py": [(
            'fields = ["name", "email", "phone"]',
            'fields = ["name", "email"]',
        )],
    },
    "files": {
        "sum-core/sum_core/migrations/0004_remove_lead_phone.py": """\
from django.db import migrations


class Migration(migrations.Migration):

    # Contract step of expand/contract: this release no longer uses phone, but
    # the previous one (sum-core 0.10.0) still selects it. sumbg runs a
    # migration marked run_after_switch only after traffic moved to the new
    # release and its watch passed (and refuses a plain rollback afterwards).
    # Plain Django ignores the attribute: `manage.py migrate` runs it at once.
    run_after_switch = True

    dependencies = [
        ("sum_core", "0003_remove_lead_message"),
    ]

    operations = [
        migrations.RemoveField(
            model_name="lead",
            name="phone",
        ),
    ]
""",
    },
}

# ---------------------------------------------------------------------------
# sum-core 0.11.0: the worker's tasks are part of the release, and countable.
# Every run of a task (the contact form's notify, `record`, and `slow`, which
# takes `seconds`, 30 by default) writes one TaskRun row (migration
# 0003_taskrun), so a test can count that each task ran exactly once across
# upgrades and rollbacks. POST /tasks/ (a test hook, no CSRF) queues tasks;
# GET /slow/?seconds=N answers after N seconds (at most 60), for in-flight
# requests across a stop. /health/ answers in the real sum-core's shape: each
# check {"status": "ok"|"fail", "latency_ms": ..., "detail"?: ...}.
# ---------------------------------------------------------------------------
TASKS = {
    "edits": {
        "sum-core/sum_core/models.py": [(
            "    def __str__(self):\n"
            '        return f"{self.name} <{self.email}>"\n',
            "    def __str__(self):\n"
            '        return f"{self.name} <{self.email}>"\n'
            "\n"
            "\n"
            "class TaskRun(models.Model):\n"
            '    """One run of a background task, written by the worker that ran it (once per run)."""\n'
            "\n"
            "    task_id = models.CharField(max_length=64)\n"
            "    kind = models.CharField(max_length=40)\n"
            "    label = models.CharField(max_length=200)\n"
            "    release = models.CharField(max_length=100)  # BUILD_ID of the worker's release\n"
            "    worker = models.CharField(max_length=200)  # the worker's Celery node\n"
            "    started_at = models.DateTimeField()\n"
            "    finished_at = models.DateTimeField(auto_now_add=True)\n"
            "\n"
            "    class Meta:\n"
            '        ordering = ["finished_at"]\n',
        )],
        "sum-core/sum_core/urls.py": [(
            '    path("contact/thanks/", views.contact_thanks, name="contact-thanks"),\n',
            '    path("contact/thanks/", views.contact_thanks, name="contact-thanks"),\n'
            '    path("tasks/", views.queue_tasks, name="queue-tasks"),\n'
            '    path("slow/", views.slow_page, name="slow"),\n',
        )],
        "sum-core/sum_core/views.py": [
            ("import logging\nimport os\n", "import logging\nimport os\nimport time\n"),
            ("from django.shortcuts import redirect, render\n",
             "from django.http import HttpResponse, JsonResponse\n"
             "from django.shortcuts import redirect, render\n"
             "from django.views.decorators.csrf import csrf_exempt\n"
             "from django.views.decorators.http import require_POST\n"),
            ("def contact_thanks(request):\n"
             '    return render(request, "sum_core/thanks.html", _context())\n',
             "def contact_thanks(request):\n"
             '    return render(request, "sum_core/thanks.html", _context())\n'
             '''

@csrf_exempt
@require_POST
def queue_tasks(request):
    """A test hook of the example site: queue `count` tasks of `kind` (record or slow), labelled
    `label`-1 .. `label`-count; 202 when the broker took them all, 503 otherwise."""
    kind = request.POST.get("kind", "record")
    if kind not in ("record", "slow"):
        return JsonResponse({"error": "kind must be record or slow"}, status=400)
    label = request.POST.get("label", "task")
    count = min(int(request.POST.get("count", "1")), 1000)
    seconds = float(request.POST.get("seconds", "30"))
    labels = [f"{label}-{n}" for n in range(1, count + 1)] if count > 1 else [label]
    queued = [name for name in labels if tasks.enqueue_kind(kind, name, seconds)]
    return JsonResponse({"queued": queued}, status=202 if len(queued) == len(labels) else 503)


def slow_page(request):
    """Answers after `seconds` (at most 60): a request still in flight when its colour stops."""
    seconds = min(float(request.GET.get("seconds", "20")), 60.0)
    log.warning("slow request started: %gs", seconds)
    time.sleep(seconds)
    return HttpResponse(f"slept {seconds:g}s\\n", content_type="text/plain")
'''),
        ],
        "sum-core/sum_core/health.py": [
            ('        result = {"ok": True, **(fn() or {})}\n'
             "    except Exception as exc:  # a health check reports every failure, whatever it is\n"
             '        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}\n',
             '        result = {"status": "ok", **(fn() or {})}\n'
             "    except Exception as exc:  # a health check reports every failure, whatever it is\n"
             '        result = {"status": "fail", "detail": str(exc) or type(exc).__name__}\n'),
            ('    if not (checks["db"]["ok"] and checks["cache"]["ok"]):\n'
             '        return "unhealthy"\n'
             '    if not all(check["ok"] for check in checks.values()):\n',
             '    if not (checks["db"]["status"] == "ok" and checks["cache"]["status"] == "ok"):\n'
             '        return "unhealthy"\n'
             '    if not all(check["status"] == "ok" for check in checks.values()):\n'),
        ],
    },
    "files": {
        "sum-core/sum_core/migrations/0003_taskrun.py": '''\
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("sum_core", "0002_lead_phone"),
    ]

    operations = [
        migrations.CreateModel(
            name="TaskRun",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("task_id", models.CharField(max_length=64)),
                ("kind", models.CharField(max_length=40)),
                ("label", models.CharField(max_length=200)),
                ("release", models.CharField(max_length=100)),
                ("worker", models.CharField(max_length=200)),
                ("started_at", models.DateTimeField()),
                ("finished_at", models.DateTimeField(auto_now_add=True)),
            ],
            options={
                "ordering": ["finished_at"],
            },
        ),
    ]
''',
        "sum-core/sum_core/tasks.py": '''\
"""sum-core's background tasks, run by the site's Celery worker (`celery -A <project> worker`).

Every run writes one TaskRun row (which task, its label, the release and the worker that ran
it), so that each task can be counted as run exactly once. Producing is best effort: a lost
notification must never fail a contact-form POST, so `enqueue` gives up at once when the
broker is unset or down.
"""

import logging
import os
import socket
import time

from celery import shared_task
from django.conf import settings
from django.utils import timezone

log = logging.getLogger(__name__)


def _record(task, kind, label, started):
    from .models import TaskRun

    TaskRun.objects.create(
        task_id=task.request.id or "",
        kind=kind,
        label=label,
        release=os.environ.get("BUILD_ID") or "unknown",
        worker=task.request.hostname or socket.gethostname(),
        started_at=started,
    )


@shared_task(name="sum_core.notify", bind=True)
def notify(self, task):
    started = timezone.now()
    _record(self, "notify", task, started)
    log.warning("sum_core task done: %s", task)
    return task


@shared_task(name="sum_core.record", bind=True)
def record(self, label):
    started = timezone.now()
    _record(self, "record", label, started)
    log.warning("sum_core task done: %s", label)
    return label


@shared_task(name="sum_core.slow", bind=True)
def slow(self, label, seconds=30):
    started = timezone.now()
    log.warning("sum_core slow task started: %s (%ss)", label, seconds)
    time.sleep(float(seconds))
    _record(self, "slow", label, started)
    log.warning("sum_core slow task done: %s", label)
    return label


def _send(signature):
    if not (getattr(settings, "CELERY_BROKER_URL", "") or ""):
        log.warning("CELERY_BROKER_URL is empty; dropped task %s", signature)
        return False
    try:
        signature.apply_async(retry=False)
        return True
    except Exception as exc:  # noqa: BLE001 - any broker failure: drop the task, keep the page
        log.warning("could not enqueue task %s: %s", signature, exc)
        return False


def enqueue(task):
    return _send(notify.s(task))


def enqueue_kind(kind, label, seconds=30):
    return _send(slow.s(label, seconds) if kind == "slow" else record.s(label))
''',
    },
}

# ---------------------------------------------------------------------------
# sum-core 0.11.2: a release whose worker crash-loops, as the real SUM worker did
# in 2026-12 (celery/kombu 5.7 with redis-py 5): it prints its banner, then exits 1
# about a second later with no error line, and Docker restarts it forever. Its web
# is fine; /health/ answers "degraded", the celery check failing and saying why.
# ---------------------------------------------------------------------------
WORKER_CRASHLOOP = {
    "edits": {
        "sum-core/sum_core/tasks.py": [
            ("import logging\nimport os\nimport socket\nimport time\n",
             "import logging\nimport os\nimport socket\nimport threading\nimport time\n"),
            ("from celery import shared_task\n",
             "from celery import shared_task\nfrom celery.signals import celeryd_after_setup\n"),
            ("def enqueue_kind(kind, label, seconds=30):\n"
             '    return _send(slow.s(label, seconds) if kind == "slow" else record.s(label))\n',
             "def enqueue_kind(kind, label, seconds=30):\n"
             '    return _send(slow.s(label, seconds) if kind == "slow" else record.s(label))\n'
             '''

def broker_library_problem():
    """Why this release's worker cannot run (the broker library it resolved refuses redis-py)."""
    import redis

    return f"Redis transport requires redis-py versions 6.1.0 or later. You have {redis.__version__}"


@celeryd_after_setup.connect
def _exit_after_the_banner(sender, instance, **kwargs):
    # Sent just before the worker prints its banner: about a second later it is gone, exit 1,
    # without a word (os._exit skips every handler and log).
    threading.Timer(1.0, os._exit, args=(1,)).start()
'''),
        ],
        "sum-core/sum_core/health.py": [(
            "def check_celery():\n"
            '    return _redis_ping("CELERY_BROKER_URL")\n',
            "def check_celery():\n"
            "    from .tasks import broker_library_problem\n"
            "\n"
            "    raise RuntimeError(broker_library_problem())\n",
        )],
    },
}

LAYERS = {
    "phone": PHONE,
    "broken-migration": BROKEN_MIGRATION,
    "no-gunicorn": NO_GUNICORN,
    "homepage-500": HOMEPAGE_500,
    "turns-unhealthy": TURNS_UNHEALTHY,
    "css-0.8.0": CSS_080,
    "git-pin": GIT_PIN,
    "pillow-source": PILLOW_SOURCE,
    "own-dockerfile": OWN_DOCKERFILE,
    "drop-message": DROP_MESSAGE,
    "rename-email": RENAME_EMAIL,
    "half-failing": HALF_FAILING,
    "drop-phone-after-switch": DROP_PHONE_AFTER_SWITCH,
    "tasks": TASKS,
    "worker-crashloop": WORKER_CRASHLOOP,
}

# "good": a release sumbg should roll out; the others fail in the way described.
RELEASES = [
    {"tag": "v1.0.0", "sum_core": "0.6.3", "layers": [], "good": True,
     "description": "First release: Lead(name, email, message, created_at), body colour #1a1a1a."},
    {"tag": "v1.1.0", "sum_core": "0.7.0", "layers": ["phone"], "good": True,
     "description": "Adds optional Lead.phone (migration 0002, db_default='') and a new stylesheet."},
    {"tag": "v1.2.0-broken-migration", "sum_core": "0.7.1", "layers": ["phone", "broken-migration"],
     "good": False,
     "description": "Migration 0003 adds Lead.fax then raises RuntimeError; nothing persists on Postgres."},
    {"tag": "v1.3.0-no-gunicorn", "sum_core": "0.7.2", "layers": ["phone", "no-gunicorn"], "good": False,
     "description": "requirements.txt lacks gunicorn: the web container can never start."},
    {"tag": "v1.4.0-homepage-500", "sum_core": "0.7.3", "layers": ["phone", "homepage-500"], "good": False,
     "description": "The homepage raises (HTTP 500) while /health/ stays ok."},
    {"tag": "v1.5.0-turns-unhealthy", "sum_core": "0.7.4", "layers": ["phone", "turns-unhealthy"],
     "good": False,
     "description": "/health/ turns 503 once a worker has served for SUM_BREAK_HEALTH_AFTER s (default 20)."},
    {"tag": "v1.6.0", "sum_core": "0.8.0", "layers": ["phone", "css-0.8.0"], "good": True,
     "description": "A good release after the broken ones: stylesheet change only."},
    # "git_pin": requirements.txt pins sum-core from git (SUM_CORE_GIT_URL@v<sum_core>,
    # subdirectory core) instead of a vendored wheel.
    {"tag": "v1.7.0-git-pin", "sum_core": "0.9.0", "layers": ["phone", "css-0.8.0", "git-pin"], "good": True,
     "git_pin": True,
     "description": "sum-core 0.9.0 pinned as git+https (no vendored wheel), plus Pillow."},
    {"tag": "v1.8.0-git-pin", "sum_core": "0.9.1", "layers": ["phone", "css-0.8.0", "git-pin"], "good": True,
     "git_pin": True,
     "description": "sum-core 0.9.1 from git: an upgrade between two git pins."},
    {"tag": "v1.9.0-pillow-source", "sum_core": "0.9.2", "layers": ["phone", "css-0.8.0", "git-pin", "pillow-source"],
     "good": True, "git_pin": True,
     "description": "sum-core 0.9.2 from git; Pillow built from source: needs [build] build_packages."},
    {"tag": "v1.10.0-own-dockerfile", "sum_core": "0.9.3", "layers": ["phone", "css-0.8.0", "own-dockerfile"],
     "good": True,
     "description": "The repo's own Dockerfile (no GIT_SHA/BUILD_ID in it); sum-core 0.9.3 vendored as a wheel."},
    # Migration safety. v1.11-v1.13 each follow v1.10.0 (schema at 0002; any sum-core
    # 0.7.0-0.9.3 release before them reads the same columns) and are alternatives, not
    # a sequence; v1.14 follows v1.11.
    {"tag": "v1.11.0-drop-message", "sum_core": "0.10.0", "layers": ["phone", "css-0.8.0", "drop-message"],
     "good": True,
     "description": "Migration 0003 drops Lead.message at once: breaks the previous release (v1.10.0, any "
                    "sum-core 0.7-0.9), whose homepage selects it. sumbg refuses it unless --maintenance "
                    "(deployable only with a maintenance window) or --accept-breaking."},
    {"tag": "v1.12.0-rename-email", "sum_core": "0.10.1", "layers": ["phone", "css-0.8.0", "rename-email"],
     "good": True,
     "description": "Migration 0003 renames Lead.email to email_address (RenameField): breaks the previous "
                    "release (v1.10.0, any sum-core 0.7-0.9), which reads email. sumbg refuses it unless "
                    "--maintenance or --accept-breaking."},
    {"tag": "v1.13.0-half-failing", "sum_core": "0.10.2", "layers": ["phone", "css-0.8.0", "half-failing"],
     "good": False,
     "description": "Non-atomic migration 0003 adds Lead.source (committed) then raises RuntimeError: on a live "
                    "database it would leave a half-applied migration. sumbg's rehearsal on a copy fails; "
                    "the live database (and the previous release, v1.10.0) stay untouched."},
    {"tag": "v1.14.0-post-switch", "sum_core": "0.10.3",
     "layers": ["phone", "css-0.8.0", "drop-message", "drop-phone-after-switch"], "good": True,
     "description": "Stops using Lead.phone; migration 0004 drops it with run_after_switch = True, since the "
                    "previous release (v1.11.0-drop-message) still selects it: sumbg runs the drop only after "
                    "the switch and the watch, so no request fails."},
    # The worker as part of a release. v1.15 follows v1.10.0 (or any sum-core 0.7-0.9 release:
    # its migration 0003_taskrun only adds a table); v1.16 and v1.17 follow v1.15.
    {"tag": "v1.15.0-tasks", "sum_core": "0.11.0", "layers": ["phone", "css-0.8.0", "tasks"], "good": True,
     "description": "Every task run writes a TaskRun row (migration 0003_taskrun): notify, record and a 30 s "
                    "slow task; POST /tasks/ queues them, GET /slow/?seconds=N answers after N s; /health/ in "
                    "the real sum-core's shape (checks with status ok/fail and detail)."},
    {"tag": "v1.16.0-tasks", "sum_core": "0.11.1", "layers": ["phone", "css-0.8.0", "tasks"], "good": True,
     "description": "The same code as 0.11.0: a good upgrade for the worker tests."},
    {"tag": "v1.17.0-worker-crashloop", "sum_core": "0.11.2",
     "layers": ["phone", "css-0.8.0", "tasks", "worker-crashloop"], "good": False,
     "description": "The worker prints its banner, then exits 1 a second later with no error line (as SUM's did "
                    "with kombu 5.7 and redis-py 5), so Docker restarts it forever; the web is fine and /health/ "
                    "answers degraded, its celery check failing with the reason."},
]

RELEASES_BY_TAG = {release["tag"]: release for release in RELEASES}
