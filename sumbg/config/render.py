"""Writing and editing TOML, with tomlkit (the only module that imports it).

`render_site_toml` writes the site.toml `sumbg init` leaves: every declared setting spelled out
under its help. `set_site_settings` and `set_host_settings` change keys of an existing file in
place: the operator's comments, order and other edits stay as they are.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import tomlkit
import tomlkit.exceptions
from tomlkit.container import Container
from tomlkit.items import Item, Table

from sumbg.config.host import parse_host
from sumbg.config.keys import SITE_TOML, SUMBG_TOML, TABLES, ConfigFile, Key, Section, lookup
from sumbg.config.site import SiteConfig, parse_site
from sumbg.config.tables import parse_toml
from sumbg.errors import ConfigError
from sumbg.util import atomic_write

HEADER = (
    "Written by `sumbg init`; edit freely, sumbg validates it before every operation. "
    "Every setting is described in sumbg's docs/configuration.md."
)
_WIDTH = 100  # comment lines are wrapped at this width


# ---------------------------------------------------------------- writing site.toml


def render_site_toml(site: SiteConfig) -> str:
    """site.toml as `sumbg init` writes it: every setting spelled out, so people can edit it."""
    doc = tomlkit.document()
    _comment(doc, HEADER)
    doc.add(tomlkit.nl())
    for section in SITE_TOML.sections:
        if not section.name:
            _write_keys(doc, section, site)
            continue
        table = tomlkit.table()
        if section.entries is not None:
            for name, value in lookup(site, section.entries.attr):
                table.add(name, value)
        _write_keys(table, section, site)
        doc.add(tomlkit.nl())
        _comment(doc, section.help)
        doc.add(section.name, table)
        table.trivia.indent = ""  # the help above stays next to its header
    return tomlkit.dumps(doc)


def _write_keys(container: Container | Table, section: Section, config: object) -> None:
    # A list of tables must come after the plain keys of its table.
    for key in sorted(section.keys, key=lambda key: key.kind is TABLES):
        value = lookup(config, section.attr(key))
        if key.kind is TABLES:
            _write_tables(container, section, key, value)
            continue
        _comment(container, key.help)
        if value is None:
            _comment(container, f"{key.name} = {key.example}")
        else:
            container.add(key.name, _item(key, value))


def _write_tables(container: Container | Table, section: Section, key: Key, items: tuple[Any, ...]) -> None:
    assert key.item is not None
    _comment(container, key.help)
    for inner in key.item.keys:
        _comment(container, f"{inner.name}: {inner.help}")
    if not items:
        if key.example:
            _comment(container, f"[[{section.name}.{key.name}]]" if section.name else f"[[{key.name}]]")
            for line in key.example.splitlines():
                _comment(container, line)
        else:
            container.add(key.name, tomlkit.array())
        return
    tables = tomlkit.aot()
    for item in items:
        table = tomlkit.table()
        for inner in key.item.keys:
            value = getattr(item, inner.name)
            if not (inner.if_set and value == inner.default):
                table.add(inner.name, _item(inner, value))
        tables.append(table)
    container.add(key.name, tables)
    tables[0].trivia.indent = ""  # the help above stays next to the first header


def _item(key: Key, value: Any) -> Item:
    plain = key.kind.to_toml(value)
    if isinstance(plain, dict):
        table = tomlkit.inline_table()
        table.update(plain)
        return table
    item: Item = tomlkit.item(plain)
    return item


def _comment(container: Container | Table, text: str) -> None:
    for line in textwrap.wrap(text, _WIDTH - 2, break_long_words=False, break_on_hyphens=False) or [""]:
        container.add(tomlkit.comment(line))


def toml_value(key: Key, value: Any) -> str:
    """A value as the file spells it (for the reference)."""
    return _item(key, value).as_string()


# ---------------------------------------------------------------- editing a file in place


def set_site_settings(path: Path, values: Mapping[str, Any]) -> str:
    """Set keys of a site.toml in place, by dotted name ({"caddy.behind_proxy": False}): the
    operator's comments, order and other keys are kept. Returns the previous text, to put back.
    The result must still be a valid site.toml, or nothing is written."""
    return _edit(path, SITE_TOML, values, parse_site)


def set_host_settings(root: Path, values: Mapping[str, Any]) -> str:
    """Set keys of $SUMBG_ROOT/sumbg.toml in place (created if missing), by dotted name
    ({"edge.tls": "internal"}). Returns the previous text ("" if there was none), to put back."""
    return _edit(root / "sumbg.toml", SUMBG_TOML, values, lambda data: parse_host(data, root), missing_ok=True)


def set_edge_settings(root: Path, values: Mapping[str, str | int]) -> str:
    """Set keys of sumbg.toml's [edge] in place; returns the previous text, to put back."""
    return set_host_settings(root, {f"edge.{key}": value for key, value in values.items()})


def _edit(
    path: Path,
    spec: ConfigFile,
    values: Mapping[str, Any],
    check: Callable[[dict[str, Any]], object],
    *,
    missing_ok: bool = False,
) -> str:
    before = "" if missing_ok and not path.exists() else _read(path, spec.name)
    parse_toml(before, spec.name)  # a file that is not TOML is refused with the parser's own message
    try:
        doc = tomlkit.parse(before)
    except tomlkit.exceptions.TOMLKitError as exc:
        raise ConfigError(f"{spec.name}: not valid TOML: {exc}") from None
    for dotted, value in values.items():
        section = _section_of(spec, dotted)
        # The table as the operator wrote it: [name], name = { ... }, dotted keys, or split in parts.
        table: Any = doc
        if section.name:
            if section.name not in doc:
                doc.add(section.name, tomlkit.table())
            table = doc[section.name]
        _set(table, dotted.rpartition(".")[2], value)
    after = tomlkit.dumps(doc)
    check(parse_toml(after, spec.name))
    atomic_write(path, after)
    return before


def _section_of(spec: ConfigFile, dotted: str) -> Section:
    """The table of a declared key, or of a name in a table of the user's names ([env])."""
    found = spec.find(dotted)
    if found is not None:
        if found[1].kind is TABLES:
            raise ConfigError(f"{spec.name}: {dotted}: a list of tables, edited in the file itself")
        return found[0]
    table = dotted.rpartition(".")[0]
    for section in spec.sections:
        if section.entries is not None and section.name == table:
            return section
    raise ConfigError(f"{spec.name}: {dotted}: unknown setting")


def _set(table: Any, name: str, value: Any) -> None:
    if name not in table:
        table[name] = value
        return
    changed = table[name] != value
    table[name] = value
    if changed and hasattr(table, "item"):
        # A comment on the value's line spoke of the old value.
        trivia = table.item(name).trivia
        trivia.comment = trivia.comment_ws = ""


def _read(path: Path, label: str) -> str:
    try:
        return path.read_text()
    except OSError as exc:
        raise ConfigError(f"{label}: cannot read {path}: {exc.strerror}") from None
