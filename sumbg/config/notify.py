"""`[[notify]]` (sumbg.toml and site.toml) and `[hooks]` (site.toml): who hears about what sumbg
did, and the commands it runs around an operation.

The catalogue of event names lives here, below the operations that emit them, because the
configuration validates the names a `[[notify]]` table subscribes to.
"""

from __future__ import annotations

from dataclasses import dataclass

# Every event sumbg emits (docs/events.md), with what it means. An operation's end is
# `<operation>.succeeded` or `<operation>.failed`; the others say more than an outcome.
EVENTS: dict[str, str] = {
    "upgrade.started": "an upgrade began (its plan is known, nothing changed yet)",
    "upgrade.succeeded": "an upgrade finished: the new release is live (and passed its watch)",
    "upgrade.failed": "an upgrade stopped at a step; traffic stayed on (or went back to) the previous release",
    "upgrade.reverted": "the watch after the switch saw a persisting failure and flipped traffic back by itself",
    "rollback.succeeded": "traffic was flipped back to the previous release",
    "rollback.failed": "a rollback did not complete",
    "restore.succeeded": "a database backup was restored",
    "restore.failed": "a restore did not complete",
    "recover.succeeded": "an interrupted site was brought back to a consistent, serving state",
    "recover.failed": "recover could not bring the site back",
    "init.succeeded": "a site was deployed for the first time",
    "init.failed": "a site's first deploy failed",
    "adopt.succeeded": "a runbook site was moved onto sumbg",
    "adopt.failed": "an adoption failed and was put back",
    "adopt-undo.succeeded": "an adopted site was put back on its runbook deployment",
    "adopt-undo.failed": "putting an adopted site back failed",
    "takeover.succeeded": "the edge took the host Caddy's ports",
    "takeover.failed": "the takeover of the host Caddy's ports failed",
    "retire.succeeded": "an idle colour was stopped and removed",
    "retire.failed": "retiring an idle colour failed",
    "backup.succeeded": "a backup was taken (sumbg backup)",
    "backup.failed": "a backup was not taken or did not verify",
    "certificate.failed": "the edge could not get a TLS certificate for a new site's domain",
    "hook.failed": "a post_* hook failed (the operation itself stood)",
    "worker.down": "reserved: a site's background worker stopped (not emitted yet)",
    "fleet.succeeded": "a fleet upgrade finished with every site moved (or already there)",
    "fleet.failed": "a fleet upgrade stopped at a failure, or some sites could not be reached",
    "test": "`sumbg notify test`",
}

# Names that stand for several events.
GROUPS: dict[str, str] = {
    "all": "every event",
    "failures": "every *.failed event, upgrade.reverted, certificate.failed, hook.failed and worker.down",
}

FAILURE_EVENTS = frozenset(
    name for name in EVENTS if name.endswith(".failed") or name in ("upgrade.reverted", "worker.down")
)


def selector_problem(selector: str) -> str | None:
    """What is wrong with one name of `events`, or None: an event, a group or `operation.*`."""
    if selector in EVENTS or selector in GROUPS:
        return None
    if selector.endswith(".*") and any(name.startswith(selector[:-1]) for name in EVENTS):
        return None
    return f"{selector!r} is not an event name, a group (all, failures) or an operation's events like 'upgrade.*'"


def selected(selectors: tuple[str, ...], event: str) -> bool:
    """Whether an event is one of `selectors` (validated names, groups or `operation.*`)."""
    for selector in selectors:
        if selector == "all" or selector == event:
            return True
        if selector == "failures" and event in FAILURE_EVENTS:
            return True
        if selector.endswith(".*") and event.startswith(selector[:-1]):
            return True
    return False


@dataclass(frozen=True)
class NotifyTarget:
    """One `[[notify]]` table: which events go where. Secrets (URLs with tokens, the HMAC secret,
    the SMTP password) stay in their 0600 files, read only when a message is sent."""

    name: str = ""
    events: tuple[str, ...] = ("failures",)
    webhook_url: str = ""  # a URL without a secret in it
    webhook_url_file: str = ""  # a file holding the URL (it carries a token)
    webhook_secret_file: str = ""  # HMAC-SHA256 key: the X-Sumbg-Signature header
    slack_url_file: str = ""  # a file holding a Slack incoming-webhook URL
    email_to: tuple[str, ...] = ()
    email_from: str = ""
    smtp_host: str = ""
    smtp_port: int = 587
    smtp_starttls: bool = True
    smtp_user: str = ""
    smtp_password_file: str = ""
    smtp_ca_file: str = ""  # trusted for STARTTLS instead of the system's CAs
    source: str = ""  # where it was declared ("sumbg.toml", "acme/site.toml"), for its label

    @property
    def kind(self) -> str:
        if self.slack_url_file:
            return "slack"
        if self.email_to:
            return "email"
        return "webhook"

    @property
    def label(self) -> str:
        """How it is named in messages, status and events.jsonl (never its URL)."""
        return f"{self.kind} {self.name}" if self.name else f"{self.kind} ({self.source})"

    def wants(self, event: str) -> bool:
        return selected(self.events, event)


@dataclass(frozen=True)
class HookSettings:
    """`[hooks]`: host commands (or `manage: <command>` in a one-off container of the release)
    run around an operation, with the SUMBG_* variables in their environment."""

    pre_upgrade: str = ""
    post_switch: str = ""
    post_upgrade: str = ""
    post_rollback: str = ""
    pre_backup: str = ""
    hook_timeout: float = 60.0

    def command(self, hook: str) -> str:
        value = getattr(self, hook)
        assert isinstance(value, str)
        return value


HOOKS = ("pre_upgrade", "post_switch", "post_upgrade", "post_rollback", "pre_backup")
MANAGE_PREFIX = "manage:"
