"""The configuration reference, docs/configuration.md, generated from the declarations.

    python -m sumbg.config.reference > docs/configuration.md

A unit test fails when the committed file differs from what this prints.
"""

from __future__ import annotations

import sys

from sumbg.config.keys import FILES, TABLES, ConfigFile, Key, Section
from sumbg.config.render import toml_value

COMMAND = "python -m sumbg.config.reference > docs/configuration.md"


def reference() -> str:
    lines = [
        "# Configuration reference",
        "",
        f"Generated from the declarations in `sumbg/config/keys.py` by `{COMMAND}`; do not edit it by hand "
        "(a unit test fails when it differs). Every error names the file, the key and what was expected, "
        "e.g. `site.toml: smoke.checks[2].path: must start with / and contain no spaces`, and exits 2.",
        "",
    ]
    for spec in FILES:
        lines += _file(spec)
    return "\n".join(lines)


def _file(spec: ConfigFile) -> list[str]:
    lines = [f"## {spec.name}", "", spec.help, ""]
    for section in spec.sections:
        lines += _section(spec, section)
        for key in section.keys:
            if key.item is not None:
                lines += _section(spec, key.item, array=True)
    return lines


def _section(spec: ConfigFile, section: Section, *, array: bool = False) -> list[str]:
    title = f"[[{section.name}]]" if array else f"[{section.name}]" if section.name else "The top of the file"
    lines = [f"### {title}", ""]
    if section.help:
        lines += [section.help, ""]
    lines += ["| Key | Type | Default | What it does |", "| --- | --- | --- | --- |"]
    for key in section.keys:
        lines.append(_row(key))
    if section.entries is not None:
        entries = section.entries
        set_by = f" Set by `sumbg init {entries.option.flag}`." if entries.option else ""
        lines.append(_cells("*NAME*", f"string: {entries.doc}", "", entries.help + set_by))
    for rule in section.checks:
        lines += ["", f"Also: {rule.doc}."]
    return [*lines, ""]


def _row(key: Key) -> str:
    kind = key.kind.doc
    rules = "; ".join(rule.doc for rule in key.rules if rule.doc)
    if key.item is not None:
        kind = f"list of [[{key.item.name}]]"
    elif rules:
        kind = f"{kind}: {rules}"
    if key.required:
        default = "required"
    elif key.default_doc:
        default = key.default_doc
    elif key.kind is TABLES and not key.default:
        default = "none"
    else:
        default = f"`{toml_value(key, key.default)}`"
    set_by = f" Set by `sumbg init {key.option.flag}`." if key.option else ""
    if key.if_set:
        set_by += " Written only when set."
    return _cells(f"`{key.name}`", kind, default, key.help + set_by)


def _cells(*cells: str) -> str:
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def main() -> None:
    sys.stdout.write(reference())


if __name__ == "__main__":
    main()
