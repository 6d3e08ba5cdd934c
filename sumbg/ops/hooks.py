"""`[hooks]`: the site's own commands around an operation, as steps of its plan.

A hook is a host command (`sh -c`, in the site's folder, killed after `hook_timeout`), or
`manage: <command>`: a management command in a one-off container of a release (the one going
live, or live). Either way it sees what the operation is about in SUMBG_* variables (a host
command in its environment). A pre_* hook that fails stops the operation before anything
changes (exit 1, its output tail shown); a post_* hook that fails is said, recorded in the
history (and as a `hook.failed` event) and undoes nothing: the operation stands.
"""

from __future__ import annotations

import shlex
import time
from dataclasses import dataclass
from typing import Any

from sumbg.config.notify import MANAGE_PREFIX
from sumbg.errors import HookFailed, SumbgError
from sumbg.ops.context import Context
from sumbg.ops.executor import Run, Step, StepResult
from sumbg.site.site import Site


@dataclass(frozen=True)
class HookCall:
    """What a hook is told, and where a `manage:` hook runs."""

    hook: str  # pre_upgrade, post_switch, ...
    operation: str
    outcome: str  # what has happened so far: "starting", "switched", "succeeded", "reverted"
    from_ref: str | None
    to_ref: str | None
    from_colour: str | None
    to_colour: str | None
    colour: str  # a `manage:` hook runs as this colour's one-off container...
    image: str  # ...of this image

    def env(self, slug: str, history_id: str) -> dict[str, str]:
        return {
            "SUMBG_SLUG": slug,
            "SUMBG_OPERATION": self.operation,
            "SUMBG_OUTCOME": self.outcome,
            "SUMBG_FROM_REF": self.from_ref or "",
            "SUMBG_TO_REF": self.to_ref or "",
            "SUMBG_FROM_COLOUR": self.from_colour or "",
            "SUMBG_TO_COLOUR": self.to_colour or "",
            "SUMBG_HISTORY_ID": history_id,
        }


def configured(site: Site, hook: str) -> str:
    return site.config.hooks.command(hook)


def run_hook(ctx: Context, site: Site, run: Run, call: HookCall) -> dict[str, Any]:
    """Run one configured hook; its record (also kept for the history's `hooks`)."""
    command = configured(site, call.hook)
    timeout = site.config.hooks.hook_timeout
    record: dict[str, Any] = {"hook": call.hook, "command": command}
    if command.startswith(MANAGE_PREFIX):
        args = shlex.split(command[len(MANAGE_PREFIX) :])
        started = time.monotonic()
        try:
            result = ctx.stacks(site).run_manage(call.colour, call.image, args)
        except SumbgError as exc:
            code, output = None, exc.output_tail or exc.message
        else:
            code, output = result.returncode, result.output
        seconds = round(time.monotonic() - started, 3)
        record["in"] = f"a one-off container of {call.image}"
    else:
        done = ctx.host_commands(command, call.env(site.slug, run.op_id), site.dir, timeout)
        code, output, seconds = done.returncode, done.output_tail, done.seconds
    record.update({"exit_code": code, "seconds": seconds})
    if code == 0:
        record["outcome"] = "ok"
    else:
        record["outcome"] = "failed"
        record["reason"] = (
            f"exited {code}"
            if code is not None
            else "could not run"
            if command.startswith(MANAGE_PREFIX)
            else f"was killed after hook_timeout {timeout:g}s"
        )
        record["output_tail"] = _tail(output)
    run.notes.setdefault("hooks", []).append(record)
    return record


def _tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def pre_hook_step(ctx: Context, site: Site, call: HookCall, summary: str) -> Step:
    """A pre_* hook as a step: its failure fails the operation before anything changed."""

    def action(run: Run) -> StepResult:
        record = run_hook(ctx, site, run, call)
        if record["outcome"] != "ok":
            raise HookFailed(
                f"the {call.hook} hook `{record['command']}` {record['reason']}; the {call.operation} was stopped "
                "before anything changed",
                command=["sh", "-c", record["command"]],
                returncode=record["exit_code"],
                output_tail=record["output_tail"],
            )
        return {"hook": call.hook, "seconds": record["seconds"]}

    return Step(call.hook.replace("_", "-"), summary, action)


def post_hook_step(ctx: Context, site: Site, call: HookCall, summary: str) -> Step:
    """A post_* hook as a step: a failure is said and recorded, and changes nothing else."""

    def action(run: Run) -> StepResult:
        return run_post_hook(ctx, site, run, call)

    return Step(call.hook.replace("_", "-"), summary, action)


def run_post_hook(ctx: Context, site: Site, run: Run, call: HookCall) -> StepResult:
    """Run a post_* hook if one is configured; never raises."""
    if not configured(site, call.hook):
        return {"outcome": "skipped", "reason": f"no {call.hook} hook"}
    try:
        record = run_hook(ctx, site, run, call)
    except Exception as exc:  # noqa: BLE001 - a post hook never undoes what the operation did
        record = {"hook": call.hook, "outcome": "failed", "reason": f"could not run: {exc}", "output_tail": ""}
        run.notes.setdefault("hooks", []).append(record)
    if record["outcome"] == "ok":
        return {"hook": call.hook, "seconds": record["seconds"]}
    run.say(f"warning: the {call.hook} hook {record['reason']}; the {call.operation} stands")
    for line in str(record.get("output_tail") or "").splitlines()[-5:]:
        run.say(f"  {line}")
    return {"outcome": "hook failed", "reason": f"the {call.hook} hook {record['reason']}"}
