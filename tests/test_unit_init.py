"""init's pure decisions: what a re-run keeps, and the Celery worker SUM runs."""

from __future__ import annotations

import pytest

from sumbg.cli import exit_code_of
from sumbg.config import SiteConfig, refuse_changes_to_kept_config
from sumbg.errors import UsageError
from sumbg.ops.init import celery_worker_command

KEPT = SiteConfig(
    slug="acme",
    domain="acme.example.com",
    aliases=("www.acme.example.com",),
    repo="/r",
    project="acme",
    settings_module="acme.settings.production",
    wsgi="acme.wsgi:application",
    worker_command="celery -A acme worker --loglevel=INFO",
    extra_env=(("FOO", "bar"),),
)


def test_a_rerun_with_the_same_or_no_options_keeps_the_file():
    refuse_changes_to_kept_config(
        KEPT,
        repo="/r",
        domains=["acme.example.com", "www.acme.example.com"],
        project=None,
        worker_command=None,
        db_publish_port=None,
        environment=None,
        env=(),
    )
    refuse_changes_to_kept_config(
        KEPT,
        repo="/r",
        domains=["acme.example.com", "www.acme.example.com"],
        project="acme",
        worker_command=celery_worker_command("acme"),
        db_publish_port=0,
        environment="production",
        env=(("FOO", "bar"),),
    )


@pytest.mark.parametrize(
    "change, message",
    [
        (
            {"domains": ["acme.example.com"]},
            "has domains = ['acme.example.com', 'www.acme.example.com'], not ['acme.example.com']",
        ),
        ({"repo": "/other"}, "has repo = '/r', not '/other'"),
        ({"env": (("FOO", "baz"),)}, "has env = (('FOO', 'bar'),), not (('FOO', 'baz'),)"),
        ({"db_publish_port": 15432}, "has db_publish_port = 0, not 15432"),
    ],
)
def test_a_rerun_that_contradicts_the_kept_file_is_refused(change, message):
    given = {
        "repo": "/r",
        "domains": ["acme.example.com", "www.acme.example.com"],
        "project": None,
        "worker_command": None,
        "db_publish_port": None,
        "environment": None,
        "env": (),
        **change,
    }
    with pytest.raises(UsageError) as refused:
        refuse_changes_to_kept_config(KEPT, **given)
    assert exit_code_of(refused.value) == 2
    assert refused.value.message == (
        f"site.toml of acme (kept from an earlier init, with any edits) {message}: "
        "edit site.toml, or remove it to start afresh"
    )


def test_the_worker_is_celery_as_sum_runs_it():
    assert celery_worker_command("acme") == "celery -A acme worker --loglevel=INFO"
