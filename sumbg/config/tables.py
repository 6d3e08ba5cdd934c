"""Reading TOML tables: every error names the file, the key and what was expected, e.g.
``site.toml: smoke.checks[2].path: must start with / and contain no spaces``."""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sumbg.config.keys import ConfigFile, Key, Problem, Rule, Section
from sumbg.errors import ConfigError


class Table:
    """A TOML table with the file name and key path needed for error messages."""

    def __init__(self, data: Mapping[str, Any], file: str, prefix: str = "") -> None:
        self.data = data
        self.file = file
        self.prefix = prefix
        self.seen: set[str] = set()

    def where(self, key: str) -> str:
        return f"{self.file}: {self.prefix}{key}"

    def fail(self, key: str, expected: str) -> ConfigError:
        return ConfigError(f"{self.where(key)}: {expected}")

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = None, *, required: bool = False) -> Any:
        self.seen.add(key)
        if key not in self.data:
            if required:
                raise self.fail(key, "is required")
            return default
        value = self.data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        # bool is an int in Python; a port of `true` is still a mistake.
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
            raise self.fail(key, f"must be {kind_name(kinds)}, not {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise self.fail(key, f"must be a finite number, not {value}")
        return value

    def table(self, key: str) -> Table:
        value = self.get(key, dict, {})
        return Table(value, self.file, f"{self.prefix}{key}.")

    def positive(self, key: str, kind: type | tuple[type, ...], default: Any) -> Any:
        value = self.get(key, kind, default)
        if value <= 0:
            raise self.fail(key, f"must be greater than 0, not {value}")
        return value

    def reject_unknown(self) -> None:
        unknown = sorted(set(self.data) - self.seen)
        if unknown:
            raise self.fail(unknown[0], "unknown setting")

    # ------------------------------------------------------------ declared keys

    def read(self, key: Key) -> Any:
        """A declared key's value, checked against its type and rules; its default when absent."""
        if key.name not in self.data:
            self.seen.add(key.name)
            if key.required:
                raise self.fail(key.name, "is required")
            return key.default
        value = self.get(key.name, key.kind.types)
        self.apply(key.name, value, key.rules)
        if key.item is not None:
            value = [
                Table(item, self.file, f"{self.prefix}{key.name}[{index}].").read_section(key.item)
                for index, item in enumerate(value)
            ]
        try:
            return key.kind.convert(value)
        except ValueError as exc:
            raise self.fail(key.name, str(exc)) from None

    def apply(self, key: str, value: Any, rules: tuple[Rule, ...]) -> None:
        for rule in rules:
            problem = rule.check(value)
            if isinstance(problem, Problem):
                raise self.fail(key + problem.at, problem.message)
            if problem:
                raise self.fail(key, problem)

    def read_section(self, section: Section) -> dict[str, Any]:
        """The values of this table's declared keys (by attribute), its unknown keys refused."""
        values = {key.name: self.read(key) for key in section.keys}
        self.apply("", values, section.checks)
        found = {section.attr(key): values[key.name] for key in section.keys}
        if section.entries is not None:
            entries = []
            for name in self.data:
                value = self.get(name, str)
                problem = section.entries.check(name, value)
                if problem:
                    raise self.fail(name, problem)
                entries.append((name, value))
            found[section.entries.attr] = tuple(entries)
        if section.name:
            self.reject_unknown()
        return found

    def read_file(self, spec: ConfigFile) -> dict[str, Any]:
        """Every declared value of a whole file (by attribute), its unknown tables and keys refused."""
        found: dict[str, Any] = {}
        for section in spec.sections:
            found.update(self.table(section.name).read_section(section) if section.name else self.read_section(section))
        self.reject_unknown()
        return found


def kind_name(kinds: tuple[type, ...]) -> str:
    names = {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "true or false",
        dict: "a table",
        list: "a list",
    }
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def load_toml(path: Path, label: str) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{label}: not found at {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{label}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{label}: cannot read {path}: {exc.strerror}") from None


def parse_toml(text: str, label: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{label}: not valid TOML: {exc}") from None
