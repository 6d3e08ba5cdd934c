"""People hear about what sumbg did: events delivered to real receivers, and [hooks] around an
upgrade and a rollback (real engine, real Caddy, Postgres; an HTTP receiver and an SMTP server
started by the test).

One site, w24-ev, goes through: `sumbg notify test` to a signed webhook, a Slack-shaped endpoint
and email over STARTTLS with a login; a good upgrade (its post_switch `manage:` hook runs in the
new release, its post_upgrade host hook sees the SUMBG_* variables); the example's release that
turns unhealthy, reverted by the watch: exactly one `upgrade.reverted` event per target, with the
reason, and the post_rollback hook told so; a failing pre_upgrade hook while the webhook's
receiver is down: exit 1, its output shown, traffic, database and backups untouched, the
undelivered event recorded and shown by `status`; a backup with the receiver still down: exit 0.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import psycopg
import pytest

from .conftest import Host, free_port, http_get
from .receivers import HttpReceiver, SmtpSink
from .traffic import Traffic

pytestmark = pytest.mark.e2e

SLUG = "w24-ev"
DOMAIN = f"{SLUG}.example.test"
SLACK_TOKEN = "T024W24/B024W24/w24-slack-secret-token"
HMAC_KEY = "w24-hmac-secret-key"
SMTP_PASSWORD = "w24-smtp-secret-password"


def secret_file(path: Path, text: str) -> str:
    path.write_text(text + "\n")
    os.chmod(path, 0o600)
    return str(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("w24-files")


@pytest.fixture(scope="module")
def web(files: Path):
    receiver = HttpReceiver(HMAC_KEY.encode(), free_port())
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def smtp(files: Path):
    sink = SmtpSink(free_port(), files, "sumbg", SMTP_PASSWORD)
    yield sink
    sink.stop()


def notify_tables(files: Path, web: HttpReceiver, smtp: SmtpSink, webhook_port: int) -> str:
    slack_url = secret_file(files / "slack-url", f"http://127.0.0.1:{web.port}/slack/{SLACK_TOKEN}")
    key = secret_file(files / "hmac-key", HMAC_KEY)
    password = secret_file(files / "smtp-password", SMTP_PASSWORD)
    return f"""
[[notify]]
name = "audit"
events = ["all"]
webhook_url = "http://127.0.0.1:{webhook_port}/hook"
webhook_secret_file = "{key}"

[[notify]]
name = "ops"
slack_url_file = "{slack_url}"

[[notify]]
name = "oncall"
events = ["failures"]
email_to = ["oncall@example.test"]
email_from = "sumbg@example.test"
smtp_host = "127.0.0.1"
smtp_port = {smtp.controller.port}
smtp_user = "sumbg"
smtp_password_file = "{password}"
smtp_ca_file = "{smtp.cert}"
"""


def configure(host: Host, files: Path, web: HttpReceiver, smtp: SmtpSink, *, webhook_port: int, **hooks: str) -> None:
    """The site's [[notify]] tables and [hooks], as an operator edits site.toml."""
    path = host.site_dir(SLUG) / "site.toml"
    text = path.read_text().split("\n[[notify]]", 1)[0]
    for hook in ("pre_upgrade", "post_switch", "post_upgrade", "post_rollback", "pre_backup"):
        lines = [line for line in text.splitlines() if line.startswith(f"{hook} = ")]
        assert len(lines) == 1, text
        text = text.replace(lines[0], f"{hook} = {json.dumps(hooks.get(hook, ''))}")
    path.write_text(text.rstrip("\n") + "\n" + notify_tables(files, web, smtp, webhook_port))


def env_file(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines())


def events_jsonl(host: Host) -> list[dict]:
    return [json.loads(line) for line in (host.root / "events.jsonl").read_text().splitlines()]


def deliveries(host: Host, event_id: str) -> dict[str, str]:
    return {line["target"]: line["outcome"] for line in events_jsonl(host) if line.get("delivery") == event_id}


def live_build(host: Host) -> str:
    status, _, body = http_get(host.http_port, DOMAIN, "/health/")
    assert status == 200, body
    return json.loads(body)["version"]["build"]


def db_counts(host: Host) -> dict[str, int]:
    with psycopg.connect(host.db_url(SLUG)) as conn:
        return {
            table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("django_migrations", "sum_core_lead", "auth_user")
        }


@pytest.fixture(scope="module")
def site(host: Host, files: Path, web: HttpReceiver, smtp: SmtpSink):
    host.init(SLUG, "v1.0.0")
    yield SLUG
    host.teardown_site(SLUG)


# What a hook is told (sumbg's own environment, SUMBG_ROOT included, is passed on too).
HOOK_VARIABLES = "(SLUG|OPERATION|OUTCOME|FROM_REF|TO_REF|FROM_COLOUR|TO_COLOUR|HISTORY_ID)"
OUTPUTS: list[str] = []  # every command's output, checked for secrets at the end


def sumbg(host: Host, *args: str):
    result = host.sumbg(*args)
    OUTPUTS.append(result.stdout + result.stderr)
    return result


def test_notify_test_reaches_a_signed_webhook_slack_and_email(host: Host, site: str, files, web, smtp) -> None:
    configure(host, files, web, smtp, webhook_port=web.port)
    result = sumbg(host, "notify", "test", site, "--json")
    assert result.returncode == 0, str(result)
    assert {(t["target"], t["outcome"]) for t in result.json()["targets"]} == {
        ("webhook audit", "delivered"),
        ("slack ops", "delivered"),
        ("email oncall", "delivered"),
    }
    [event] = web.events()
    assert (event["schema"], event["event"], event["operation"]) == (1, "test", "notify-test")
    [text] = web.slack_texts()
    assert "this target works" in text
    [mail] = smtp.messages
    assert (mail["tls"], mail["login"], mail["to"]) == (True, True, ["oncall@example.test"])
    assert "Subject: [sumbg] " in mail["data"] and ": test" in mail["data"]
    # A test is not an event of the site: nothing is recorded.
    assert [e["event"] for e in events_jsonl(host) if "schema" in e and e["site"] == SLUG] == ["init.succeeded"]


def test_an_upgrade_runs_its_hooks_and_notifies_who_asked(host: Host, site: str, files, web, smtp) -> None:
    configure(
        host,
        files,
        web,
        smtp,
        webhook_port=web.port,
        post_switch='manage: shell -c "from django.contrib.auth.models import User; '
        "User.objects.get_or_create(username='w24-hook')\"",
        post_upgrade=f"env | grep -E '^SUMBG_{HOOK_VARIABLES}=' | sort > {files}/post_upgrade.env",
    )
    slack_before, mail_before = len(web.slack_texts()), len(smtp.messages)
    result = sumbg(host, "upgrade", site, "v1.1.0", "--watch", "0", "--json")
    assert result.returncode == 0, str(result)
    done = result.json()
    assert [(s["name"], s["outcome"]) for s in done["steps"] if s["name"].startswith("post")] == [
        ("post-switch", "ok"),
        ("post-upgrade", "ok"),
    ]
    with psycopg.connect(host.db_url(SLUG)) as conn:
        assert conn.execute("SELECT username FROM auth_user WHERE username = 'w24-hook'").fetchone() == ("w24-hook",)
    assert env_file(files / "post_upgrade.env") == {
        "SUMBG_SLUG": SLUG,
        "SUMBG_OPERATION": "upgrade",
        "SUMBG_OUTCOME": "succeeded",
        "SUMBG_FROM_REF": "v1.0.0",
        "SUMBG_TO_REF": "v1.1.0",
        "SUMBG_FROM_COLOUR": "blue",
        "SUMBG_TO_COLOUR": "green",
        "SUMBG_HISTORY_ID": done["id"],
    }
    assert [e["event"] for e in web.events(done["id"])] == ["upgrade.started", "upgrade.succeeded"]
    succeeded = web.events(done["id"])[1]
    assert (succeeded["site"], succeeded["from"], succeeded["to"]) == (
        SLUG,
        {"ref": "v1.0.0", "colour": "blue"},
        {"ref": "v1.1.0", "colour": "green"},
    )
    assert set(succeeded["steps"]) >= {"preflight", "build", "switch", "post-switch", "post-upgrade"}
    # Slack and email asked for failures only.
    assert (len(web.slack_texts()), len(smtp.messages)) == (slack_before, mail_before)


def test_the_watch_revert_is_one_reverted_event_for_each_target(host: Host, site: str, files, web, smtp) -> None:
    configure(
        host,
        files,
        web,
        smtp,
        webhook_port=web.port,
        post_rollback=f"env | grep -E '^SUMBG_{HOOK_VARIABLES}=' | sort > {files}/post_rollback.env",
    )
    slack_before, mail_before = len(web.slack_texts()), len(smtp.messages)
    result = sumbg(host, "upgrade", site, "v1.5.0-turns-unhealthy", "--watch", "90", "--json")
    assert result.returncode == 1, str(result)
    history_id = result.json()["result"]["id"]
    events = web.events(history_id)
    assert [e["event"] for e in events] == ["upgrade.started", "upgrade.reverted"]
    reverted = events[1]
    assert reverted["outcome"] == "reverted"
    assert reverted["reason"].startswith("3 probes in a row failed, the last: /health/ through Caddy"), reverted
    assert (reverted["from"]["ref"], reverted["to"]["ref"]) == ("v1.1.0", "v1.5.0-turns-unhealthy")
    assert reverted["watch"]["failed_probes"] == 3
    assert live_build(host) == "v1.1.0"
    slack = web.slack_texts()[slack_before:]
    assert len(slack) == 1, slack
    assert "was reverted by the watch after the switch: 3 probes in a row failed" in slack[0]
    assert "traffic is back on green (v1.1.0)" in slack[0]
    mails = smtp.messages[mail_before:]
    assert len(mails) == 1
    assert f"Subject: [sumbg] {SLUG}: upgrade.reverted" in mails[0]["data"]
    recorded = [line for line in events_jsonl(host) if line.get("history_id") == history_id and "schema" in line]
    assert [line["event"] for line in recorded] == ["upgrade.started", "upgrade.reverted"]
    assert deliveries(host, recorded[1]["id"]) == {
        "webhook audit": "delivered",
        "slack ops": "delivered",
        "email oncall": "delivered",
    }
    told = env_file(files / "post_rollback.env")
    assert (told["SUMBG_OPERATION"], told["SUMBG_OUTCOME"], told["SUMBG_FROM_REF"], told["SUMBG_TO_REF"]) == (
        "upgrade",
        "reverted",
        "v1.5.0-turns-unhealthy",
        "v1.1.0",
    )


def test_a_failing_pre_upgrade_hook_changes_nothing_and_a_down_receiver_changes_no_exit_code(
    host: Host, site: str, files, web, smtp
) -> None:
    down = free_port()  # nothing listens there: the webhook's receiver is down
    configure(
        host,
        files,
        web,
        smtp,
        webhook_port=down,
        pre_upgrade="echo checking the deploy window; echo no deploys on Friday >&2; exit 3",
        pre_backup=f"touch {files}/pre_backup.ran",
    )
    state_before = host.state(SLUG)
    live_file = host.root / "caddy" / "state" / SLUG / "live"
    caddy_before, counts_before = live_file.read_text(), db_counts(host)
    backups_before = sorted(p.name for p in (host.site_dir(SLUG) / "backups").iterdir())
    mail_before = len(smtp.messages)
    with Traffic(host.http_port, DOMAIN, path="/", keepalive_clients=1, fresh_clients=1) as traffic:
        result = sumbg(host, "upgrade", site, "v1.6.0", "--json")
        time.sleep(0.5)
    report = traffic.stop()
    assert result.returncode == 1, str(result)
    failure = result.json()
    assert (failure["error"], failure["step"]) == ("HookFailed", "pre-upgrade")
    assert failure["message"].startswith("the pre_upgrade hook `echo checking the deploy window;")
    assert "exited 3; the upgrade was stopped before anything changed" in failure["message"]
    assert "no deploys on Friday" in result.stderr  # its output tail
    assert not (files / "pre_backup.ran").exists()  # stopped before the backup's hook
    assert report.failures == [] and report.sent > 10, report.summary()
    assert live_build(host) == "v1.1.0"
    assert live_file.read_text() == caddy_before
    after = host.state(SLUG)
    assert (after["live"], after["colours"]) == (state_before["live"], state_before["colours"])
    assert db_counts(host) == counts_before
    assert sorted(p.name for p in (host.site_dir(SLUG) / "backups").iterdir()) == backups_before
    # The webhook's receiver is down: said, recorded, shown by status; the others got the failure.
    assert "upgrade.failed was not delivered to webhook audit after 4 attempt(s): connection refused" in result.stderr
    recorded = [line for line in events_jsonl(host) if line.get("history_id") == failure["result"]["id"]]
    assert [line["event"] for line in recorded if "schema" in line] == ["upgrade.started", "upgrade.failed"]
    failed = recorded[-1]
    assert (failed["event"], failed["step"]) == ("upgrade.failed", "pre-upgrade")
    assert deliveries(host, failed["id"]) == {
        "webhook audit": "undelivered",
        "slack ops": "delivered",
        "email oncall": "delivered",
    }
    assert len(smtp.messages) == mail_before + 1
    status = sumbg(host, "status", SLUG)
    assert status.returncode == 0, str(status)
    assert "UNDELIVERED: 2 notification(s) did not reach their target" in status.stdout
    assert "  upgrade.failed -> webhook audit: connection refused\n" in status.stdout
    undelivered = sumbg(host, "status", SLUG, "--json").json()["undelivered_events"]
    assert {(u["event"], u["target"], u["attempts"]) for u in undelivered} == {
        ("upgrade.started", "webhook audit", 4),
        ("upgrade.failed", "webhook audit", 4),
    }

    # A backup with the receiver still down: done, exit 0, its pre_backup hook ran.
    started = time.monotonic()
    backup = sumbg(host, "backup", site)
    seconds = time.monotonic() - started
    assert backup.returncode == 0, str(backup)
    assert (files / "pre_backup.ran").exists()
    assert "backup.succeeded was not delivered to webhook audit" in backup.stderr
    print(f"backup with the webhook receiver down: {seconds:.1f}s")


def test_no_secret_is_written_or_printed(host: Host, site: str) -> None:
    written = (
        "".join((host.site_dir(SLUG) / name).read_text() for name in ("history.jsonl", "state.json"))
        + (host.root / "events.jsonl").read_text()
    )
    for secret in (SLACK_TOKEN, HMAC_KEY, SMTP_PASSWORD):
        assert secret not in written
        assert all(secret not in output for output in OUTPUTS)
