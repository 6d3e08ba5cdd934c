"""When `sumbg retire --due` retires an idle colour: the pure decision, and durations."""

from __future__ import annotations

import pytest

from sumbg.ops.retire import soak_decision
from sumbg.site.state import SiteState
from sumbg.util import parse_duration

STATE = {
    "live": "green",
    "previous": "blue",
    "operation": None,
    "colours": {"green": {"ref": "v2", "deployed_at": "2026-11-27T10:00:00Z"}, "blue": {"ref": "v1"}},
}


@pytest.mark.parametrize(
    "state, soak, idle_running, age, expected",
    [
        (STATE, 3600, True, 3601, None),
        (STATE, 0, True, 10**9, "kept: no soak period is set (upgrade.retire_idle_after)"),
        (STATE, 86400, True, 5400, "soaking: green went live 1.5h ago, kept for 1.0d"),
        (STATE, 60, False, 3600, "blue is not running"),
        (
            {**STATE, "operation": {"kind": "upgrade"}},
            60,
            True,
            3600,
            "an operation (upgrade) is running or was interrupted",
        ),
        ({"colours": {}}, 60, True, 3600, "never deployed"),
    ],
)
def test_an_idle_colour_is_retired_only_once_it_has_soaked(state, soak, idle_running, age, expected):
    assert soak_decision(SiteState.from_json(state), soak, idle_running=idle_running, age=age) == expected


def test_durations_read_like_an_operator_writes_them():
    assert [parse_duration(v) for v in (90, 1.5, "90", "30m", "2h", "1d", " 2H ")] == [
        90.0,
        1.5,
        90.0,
        1800.0,
        7200.0,
        86400.0,
        7200.0,
    ]
    for bad in ("", "soon", "-5m", "1w", True, float("inf")):
        with pytest.raises(ValueError):
            parse_duration(bad)
