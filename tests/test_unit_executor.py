"""sumbg.executor: plans run step by step, journalled in state.json and history.jsonl,
undone newest first on failure."""

from __future__ import annotations

import io
import json

import pytest

from sumbg.cli import exit_code_of
from sumbg.errors import CheckFailed, NeedsOperator, SumbgError
from sumbg.ops.executor import Plan, Reporter, Run, Step, execute
from sumbg.site.records import SiteRecords

from .fakes import write_state_json


@pytest.fixture
def records(tmp_path) -> SiteRecords:
    return SiteRecords(tmp_path / "acme")


@pytest.fixture
def reporter() -> Reporter:
    return Reporter(stream=io.StringIO())


def plan(*steps: Step, facts: dict | None = None) -> Plan:
    return Plan(operation="upgrade", slug="acme", steps=steps, facts=facts or {"from": "v1.0.0", "to": "v1.1.0"})


def ok(name: str, result: dict | None = None, calls: list | None = None) -> Step:
    def action(run: Run):
        if calls is not None:
            calls.append(name)
        return dict(result) if result else None

    return Step(name, f"do {name}", action)


def failing(name: str, exc: BaseException) -> Step:
    def action(run: Run):
        raise exc

    return Step(name, f"do {name}", action)


def state_file(records: SiteRecords) -> dict:
    return json.loads(records.state_path.read_text())


# ---------------------------------------------------------------- describe


def test_plan_describe_lists_every_step():
    p = Plan(
        operation="upgrade",
        slug="acme",
        steps=(
            Step("preflight", "check disk, engine and repo", lambda run: None),
            Step("build", "build sum-acme:v1.1.0", lambda run: None, details={"image": "sum-acme:v1.1.0"}),
            Step("switch", "point live at green", lambda run: None, details={"from": "blue", "to": "green"}),
        ),
        facts={"from": "v1.0.0", "to": "v1.1.0"},
    )
    assert p.describe() == {
        "operation": "upgrade",
        "site": "acme",
        "from": "v1.0.0",
        "to": "v1.1.0",
        "steps": [
            {"name": "preflight", "summary": "check disk, engine and repo"},
            {"name": "build", "summary": "build sum-acme:v1.1.0", "image": "sum-acme:v1.1.0"},
            {"name": "switch", "summary": "point live at green", "from": "blue", "to": "green"},
        ],
    }


def test_describe_of_an_empty_plan():
    assert Plan("status", "acme", ()).describe() == {"operation": "status", "site": "acme", "steps": []}


# ---------------------------------------------------------------- success


def test_successful_plan(records, reporter):
    calls: list[str] = []
    summary = execute(
        plan(ok("preflight", calls=calls), ok("build", {"image": "sum-acme:v1.1.0"}, calls), ok("switch", calls=calls)),
        records,
        reporter,
        command="sumbg upgrade acme v1.1.0",
    )
    assert calls == ["preflight", "build", "switch"]
    history = records.history()
    assert [e["event"] for e in history] == ["started", "finished"]
    started, finished = history
    assert started["operation"] == "upgrade"
    assert started["command"] == "sumbg upgrade acme v1.1.0"
    assert started["plan"] == ["preflight", "build", "switch"]
    assert (started["from"], started["to"]) == ("v1.0.0", "v1.1.0")
    assert isinstance(started["pid"], int)
    assert finished["id"] == started["id"]
    assert finished["outcome"] == "done"
    assert [(s["name"], s["outcome"]) for s in finished["steps"]] == [
        ("preflight", "ok"),
        ("build", "ok"),
        ("switch", "ok"),
    ]
    assert finished["steps"][1]["image"] == "sum-acme:v1.1.0"
    for step in finished["steps"]:
        assert isinstance(step["seconds"], float) and 0 <= step["seconds"] < 5
    assert finished["seconds"] >= sum(s["seconds"] for s in finished["steps"]) - 0.01
    assert summary == {k: v for k, v in finished.items() if k != "at"}
    assert state_file(records)["operation"] is None
    assert records.operations() == [finished]


def test_progress_is_reported(records):
    stream = io.StringIO()
    execute(plan(ok("preflight")), records, Reporter(stream=stream))
    lines = stream.getvalue().splitlines()
    assert lines[0] == "sumbg upgrade acme"
    assert lines[1] == "  -> preflight: do preflight"
    assert lines[2].startswith("     ok preflight (") and lines[2].endswith("s)")
    assert lines[3].startswith("done in ")


def test_quiet_reporter_prints_nothing(records):
    stream = io.StringIO()
    execute(plan(ok("preflight")), records, Reporter(stream=stream, quiet=True))
    assert stream.getvalue() == ""


def test_state_names_the_running_step(records, reporter):
    seen = []

    def look(run: Run):
        on_disk = state_file(records)["operation"]
        seen.append((on_disk["step"], on_disk["kind"], on_disk["id"] == run.op_id, on_disk["from"]))

    execute(plan(Step("first", "one", look), Step("second", "two", look)), records, reporter)
    assert seen == [("first", "upgrade", True, "v1.0.0"), ("second", "upgrade", True, "v1.0.0")]
    assert state_file(records)["operation"] is None


def test_steps_can_save_state_and_notes(records, reporter):
    def switch(run: Run):
        run.state.live = "green"
        run.save_state()
        run.notes["switched_at"] = "2024-01-01T00:00:00Z"

    summary = execute(plan(Step("switch", "flip", switch)), records, reporter)
    assert state_file(records)["live"] == "green"
    assert state_file(records)["operation"] is None
    assert summary["switched_at"] == "2024-01-01T00:00:00Z"


def test_existing_state_is_kept(records, reporter):
    write_state_json(
        records.site_dir, {"live": "blue", "colours": {"blue": {"ref": "v1.0.0"}}, "previous": None, "operation": None}
    )
    execute(plan(ok("noop")), records, reporter)
    state = state_file(records)
    assert (state["live"], state["colours"]) == ("blue", {"blue": {"ref": "v1.0.0"}})


def test_skipped_step_is_recorded_as_skipped(records, reporter):
    summary = execute(
        plan(ok("backup", {"outcome": "skipped", "reason": "database is empty"}), ok("build")), records, reporter
    )
    assert [{k: v for k, v in s.items() if k != "seconds"} for s in summary["steps"]] == [
        {"name": "backup", "outcome": "skipped", "reason": "database is empty"},
        {"name": "build", "outcome": "ok"},
    ]
    assert "skipped backup (" in reporter.stream.getvalue()
    assert "database is empty" in reporter.stream.getvalue()


# ---------------------------------------------------------------- failure and undo


def test_failing_step_undoes_newest_first(records, reporter):
    undone: list[str] = []

    def register(what: str):
        def action(run: Run):
            run.on_failure(f"remove {what}", lambda: undone.append(what))

        return Step(what, f"make {what}", action)

    later: list[str] = []
    steps = (
        register("network"),
        register("volume"),
        register("container"),
        failing(
            "migrate",
            CheckFailed(
                "migrations failed",
                command=["manage.py", "migrate"],
                returncode=1,
                output_tail="django.db.utils.ProgrammingError",
            ),
        ),
        ok("switch", calls=later),
    )
    with pytest.raises(CheckFailed) as info:
        execute(plan(*steps), records, reporter)
    err = info.value
    assert exit_code_of(err) == 1
    assert (err.site, err.step) == ("acme", "migrate")
    assert undone == ["container", "volume", "network"]
    assert later == []

    finished = records.history()[-1]
    assert finished["outcome"] == "aborted"
    assert finished["failed_step"] == "migrate"
    assert finished["error"] == {
        "error": "CheckFailed",
        "message": "migrations failed",
        "site": "acme",
        "step": "migrate",
        "command": ["manage.py", "migrate"],
        "returncode": 1,
        "output_tail": "django.db.utils.ProgrammingError",
    }
    assert finished["undo"] == [
        {"what": "remove container", "outcome": "ok"},
        {"what": "remove volume", "outcome": "ok"},
        {"what": "remove network", "outcome": "ok"},
    ]
    assert [(s["name"], s["outcome"]) for s in finished["steps"]] == [
        ("network", "ok"),
        ("volume", "ok"),
        ("container", "ok"),
        ("migrate", "failed"),
    ]
    assert finished["steps"][-1]["error"] == finished["error"]
    assert (finished["from"], finished["to"]) == ("v1.0.0", "v1.1.0")
    assert err.result == {k: v for k, v in finished.items() if k != "at"}
    assert state_file(records)["operation"] is None
    assert records.operations() == [finished]


def test_forget_cleanups_means_nothing_is_undone(records, reporter):
    undone = []

    def point_of_no_return(run: Run):
        run.on_failure("stop green", lambda: undone.append("green"))
        run.forget_cleanups()

    with pytest.raises(SumbgError):
        execute(
            plan(Step("switch", "flip", point_of_no_return), failing("watch", CheckFailed("5xx"))), records, reporter
        )
    assert undone == []
    assert records.history()[-1]["undo"] == []


def test_failing_undo_needs_an_operator(records, reporter):
    undone = []

    def action(run: Run):
        run.on_failure("remove network", lambda: undone.append("network"))
        run.on_failure("restore database", lambda: (_ for _ in ()).throw(RuntimeError("disk full")))
        run.on_failure("stop green", lambda: undone.append("green"))

    with pytest.raises(NeedsOperator) as info:
        execute(
            plan(Step("prepare", "prepare", action), failing("migrate", CheckFailed("migrations failed"))),
            records,
            reporter,
        )
    err = info.value
    assert exit_code_of(err) == 3
    assert err.message == (
        "could not undo 'restore database': unexpected RuntimeError: disk full [step undo]; "
        "check `sumbg status` and run `sumbg recover` once the cause is fixed"
    )
    assert err.output_tail.strip() == "original failure: migrations failed [site acme, step migrate]"
    assert undone == ["green", "network"]  # the other undos still ran, newest first
    finished = records.history()[-1]
    assert finished["outcome"] == "needs-operator"
    assert finished["failed_step"] == "migrate"
    assert finished["error"]["message"] == "migrations failed"
    assert finished["undo"] == [
        {"what": "stop green", "outcome": "ok"},
        {
            "what": "restore database",
            "outcome": "failed",
            "error": {"error": "SumbgError", "message": "unexpected RuntimeError: disk full", "step": "undo"},
        },
        {"what": "remove network", "outcome": "ok"},
    ]
    assert state_file(records)["operation"] is None


def test_needs_operator_names_the_site_and_has_a_clean_tail(records, reporter):
    def action(run: Run):
        run.on_failure("restore database", lambda: (_ for _ in ()).throw(RuntimeError("disk full")))

    with pytest.raises(NeedsOperator) as info:
        execute(
            plan(Step("prepare", "prepare", action), failing("migrate", CheckFailed("migrations failed"))),
            records,
            reporter,
        )
    assert info.value.site == "acme"
    assert info.value.output_tail == "original failure: migrations failed [site acme, step migrate]"


def test_non_sumbg_exception_is_wrapped_with_the_step(records, reporter, monkeypatch):
    monkeypatch.delenv("SUMBG_VERBOSE", raising=False)
    with pytest.raises(SumbgError) as info:
        execute(plan(ok("preflight"), failing("render", ValueError("bad template"))), records, reporter)
    err = info.value
    assert type(err) is SumbgError
    assert err.message == "unexpected ValueError: bad template"
    assert (err.site, err.step, exit_code_of(err)) == ("acme", "render", 1)
    assert err.format_message() == "unexpected ValueError: bad template [site acme, step render]"
    assert isinstance(err.__cause__, ValueError)
    assert records.history()[-1]["error"] == {
        "error": "SumbgError",
        "message": "unexpected ValueError: bad template",
        "site": "acme",
        "step": "render",
    }


def test_verbose_wrapping_keeps_the_traceback_tail(records, reporter, monkeypatch):
    monkeypatch.setenv("SUMBG_VERBOSE", "1")
    with pytest.raises(SumbgError) as info:
        execute(plan(failing("render", ValueError("bad template"))), records, reporter)
    assert info.value.output_tail.endswith("ValueError: bad template\n")


def test_a_sumbg_error_keeps_its_own_site_and_step(records, reporter):
    with pytest.raises(CheckFailed) as info:
        execute(plan(failing("smoke", CheckFailed("nope", site="other", step="inner"))), records, reporter)
    assert (info.value.site, info.value.step) == ("other", "inner")


def test_keyboard_interrupt_is_recorded_and_undone(records, reporter):
    undone = []

    def action(run: Run):
        run.on_failure("stop green", lambda: undone.append("green"))
        raise KeyboardInterrupt

    with pytest.raises(SumbgError) as info:
        execute(plan(Step("build", "build", action)), records, reporter)
    assert info.value.message == "interrupted"
    assert undone == ["green"]
    assert records.history()[-1]["outcome"] == "aborted"


def test_a_host_wide_operation_journals_and_records_itself_on_every_site_it_changes(tmp_path, reporter):
    acme, bobs = SiteRecords(tmp_path / "acme"), SiteRecords(tmp_path / "bobs")
    write_state_json(bobs.site_dir, {"live": "green", "colours": {"green": {"ref": "v2"}}, "operation": None})
    seen = []

    def look(run: Run):
        seen.append((state_file(acme)["operation"]["kind"], state_file(bobs)["operation"]["kind"]))

    summary = execute(plan(Step("look", "look", look)), acme, reporter, command="takeover", companions=[bobs])
    assert seen == [("upgrade", "upgrade")]
    for records in (acme, bobs):
        assert state_file(records)["operation"] is None
        started, finished = [json.loads(line) for line in records.history_path.read_text().splitlines()]
        assert (started["event"], started["id"], finished["event"], finished["outcome"]) == (
            "started",
            summary["id"],
            "finished",
            "done",
        )
    assert state_file(bobs)["colours"] == {"green": {"ref": "v2"}}

    with pytest.raises(SumbgError):
        execute(plan(failing("look", CheckFailed("no"))), acme, reporter, companions=[bobs])
    last = json.loads(bobs.history_path.read_text().splitlines()[-1])
    assert (last["outcome"], last["failed_step"]) == ("aborted", "look")
    assert state_file(bobs)["operation"] is None
