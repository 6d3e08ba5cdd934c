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
            'def home(request):\n    return render(request, "sum_core/home.html", _context())\n',
            "def home(request):\n"
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
]

RELEASES_BY_TAG = {release["tag"]: release for release in RELEASES}
