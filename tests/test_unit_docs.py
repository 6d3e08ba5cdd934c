"""The documentation stays true to the tree and to the command line.

README.md and docs/*.md: every relative link points at a file (and, with a #fragment, a
heading) that exists, and every repository path quoted in code (`sumbg/ops/switch.py`)
exists, so a moved module or a renamed page cannot leave a dead reference. README's
commands table (the CLI contract) names only real commands and options of `sumbg.cli.cli`,
and every command and option the CLI has.
"""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from sumbg.cli import cli

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.M | re.S)
CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.S)
INLINE_LINK = re.compile(r"(?<!\!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.M)
# Paths of the repository as the docs quote them in code: `sumbg/ops/switch.py`, `tests/golden/`.
REPO_PATH = re.compile(r"^(?:sumbg|tests|scripts|compose|templates|images|examples|bench|docs)/[\w./-]*$")


def page_id(path: Path) -> str:
    return str(path.relative_to(REPO))


def prose(text: str) -> str:
    """The text outside fenced code blocks and code spans: where Markdown links are links."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def anchor(heading: str) -> str:
    """GitHub's id for a heading: lower case, punctuation other than - and _ dropped, spaces to -."""
    text = CODE_SPAN.sub(lambda m: m.group(2), heading).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    for heading in HEADING.findall(FENCE.sub("", path.read_text())):
        base = anchor(heading)
        name, n = base, 0
        while name in found:  # GitHub numbers repeated headings: x, x-1, x-2
            n += 1
            name = f"{base}-{n}"
        found.add(name)
    return found


def broken_links(page: Path, root: Path = REPO) -> list[str]:
    problems = []
    for target in INLINE_LINK.findall(prose(page.read_text())):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path_part, _, fragment = target.partition("#")
        resolved = (page.parent / path_part).resolve() if path_part else page
        if not resolved.exists():
            shown = resolved.relative_to(root) if root in resolved.parents else resolved
            problems.append(f"{target}: no such file {shown}")
        elif fragment and resolved.suffix == ".md" and fragment not in anchors(resolved):
            problems.append(f"{target}: {resolved.relative_to(root)} has no heading #{fragment}")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_relative_link_points_at_an_existing_file_and_heading(page):
    assert broken_links(page) == []


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_repository_path_quoted_in_code_exists(page):
    text = page.read_text()
    quoted = {span for _, span in CODE_SPAN.findall(FENCE.sub("", text)) if REPO_PATH.match(span)}
    assert sorted(path for path in quoted if not (REPO / path).exists()) == []


def test_the_link_checker_sees_a_dead_link_a_dead_heading_and_ignores_code(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "there.md").write_text("# There\n\n## Exit codes\n\n## Exit codes\n")
    page = tmp_path / "docs" / "page.md"
    page.write_text(
        "[ok](there.md) [ok](there.md#exit-codes-1) [up](../docs/there.md#there) [web](https://example.com/x)\n"
        "[gone](missing.md) [no heading](there.md#nowhere) `[in code](missing-too.md)`\n"
        "```\n[in a fence](missing-three.md)\n```\n"
    )
    assert broken_links(page, root=tmp_path) == [
        "missing.md: no such file docs/missing.md",
        "there.md#nowhere: docs/there.md has no heading #nowhere",
    ]


def test_anchors_follow_github():
    assert anchor("rollback --restore-db") == "rollback---restore-db"
    assert anchor("SITES.md and WHAT-BROKE.md") == "sitesmd-and-what-brokemd"
    assert anchor("`[build]`") == "build"
    assert anchor("Records and reality agree, or every command says so") == (
        "records-and-reality-agree-or-every-command-says-so"
    )


# ---------------------------------------------------------------- the commands table


def commands_table() -> list[str]:
    """The usage of each entry of README's "Commands (contract)" code block, descriptions cut off:
    an entry starts with `sumbg`, an indented line continues it, `... / sumbg ...` starts another."""
    text = (REPO / "README.md").read_text()
    section = text.split("## Commands (contract)", 1)[1]
    block = re.search(r"^```\n(.*?)^```", section, re.M | re.S)
    assert block, "README.md: the Commands (contract) section has no code block"
    entries: list[str] = []
    for line in block.group(1).splitlines():
        usage = re.split(r"(?<=\S)\s{3,}", line.strip(), maxsplit=1)[0]
        if line.startswith("sumbg"):
            entries.extend("sumbg " + part for part in re.split(r"\s/\s*sumbg\s", usage.removeprefix("sumbg ")))
        elif line.strip():
            assert entries, f"README.md commands table: a continuation line before any command: {line!r}"
            entries[-1] += " " + usage
    return entries


def resolve(entry: str) -> tuple[str, click.Command]:
    """The command an entry documents (`sumbg fleet upgrade ...` -> 'fleet upgrade'), or the
    group itself for `sumbg [--root DIR] ...`; AssertionError naming the entry if it is not real."""
    words = entry.split()[1:]
    command: click.Command = cli
    path: list[str] = []
    while words and re.fullmatch(r"[a-z][a-z-]*", words[0]) and isinstance(command, click.Group):
        name = words.pop(0)
        assert name in command.commands, f"README.md documents `sumbg {' '.join([*path, name])}`: not a command"
        command = command.commands[name]
        path.append(name)
    assert isinstance(command, click.Command) and not (isinstance(command, click.Group) and path), (
        f"README.md documents `{entry}`: `sumbg {' '.join(path)}` needs a subcommand"
    )
    return " ".join(path), command


def option_names(command: click.Command) -> set[str]:
    return {opt for param in command.params for opt in (*param.opts, *param.secondary_opts) if opt.startswith("-")}


def real_commands(group: click.Group = cli, prefix: str = "") -> dict[str, click.Command]:
    found: dict[str, click.Command] = {"": cli} if not prefix else {}
    for name, command in group.commands.items():
        path = f"{prefix}{name}"
        if command.hidden:  # started by sumbg itself (`_drain-worker`, `_move-worker`): not the contract
            continue
        if isinstance(command, click.Group):
            found.update(real_commands(command, f"{path} "))
        else:
            found[path] = command
    return found


def test_the_commands_table_names_only_real_commands_and_options():
    for entry in commands_table():
        path, command = resolve(entry)
        unknown = set(re.findall(r"--[a-z][a-z-]*", entry)) - option_names(command) - {"--help"}
        assert not unknown, f"README.md documents `{entry}`: `sumbg {path}` has no option {sorted(unknown)}"


def test_the_commands_table_documents_every_command_and_option():
    documented: dict[str, set[str]] = {}
    for entry in commands_table():
        path, _ = resolve(entry)
        documented.setdefault(path, set()).update(re.findall(r"--[a-z][a-z-]*", entry))
    real = real_commands()
    assert sorted(documented) == sorted(real)
    missing = {
        path or "(sumbg itself)": sorted(option_names(command) - documented[path] - {"--help", "-h"})
        for path, command in real.items()
    }
    assert {path: options for path, options in missing.items() if options} == {}


def test_the_table_reader_splits_entries_and_refuses_what_is_not_a_command():
    assert resolve("sumbg fleet upgrade --core X.Y.Z")[0] == "fleet upgrade"
    assert resolve("sumbg [--root DIR] [--verbose]")[0] == ""
    with pytest.raises(AssertionError, match="`sumbg deploy`: not a command"):
        resolve("sumbg deploy SLUG")
    with pytest.raises(AssertionError, match="needs a subcommand"):
        resolve("sumbg fleet --json")
