"""Runs inside a release's container (`manage.py shell -c`), never imported by sumbg itself.

Splits the release's pending migrations into those that run before the switch and
those marked to run after it: a migration whose class says `run_after_switch = True`
(a "contract" step such as dropping a column the previous release still reads), and
every pending migration that depends on one, waits until traffic is on the new release
and its watch passed. `sumbg` prepends `MODE = "plan"` or `MODE = "pre"`:

- plan: print what is pending and what waits;
- pre:  apply only what does not wait (per app, up to its last such migration).

The result is one line, `SUMBG-MIGRATIONS {json}`, after Django's own output.
"""

import json

# A migration node, as Django names it: (app label, migration name).
Node = tuple[str, str]


def waiting_for_switch(pending: list[Node], marked: set[Node], children: dict[Node, list[Node]]) -> set[Node]:
    """The pending nodes that must wait: the marked ones and every pending descendant."""
    pending_set = set(pending)
    waiting: set[Node] = set()
    stack = [node for node in pending if node in marked]
    while stack:
        node = stack.pop()
        if node in waiting:
            continue
        waiting.add(node)
        stack.extend(child for child in children.get(node, ()) if child in pending_set)
    return waiting


def pre_switch_targets(pending: list[Node], waiting: set[Node]) -> dict[str, str]:
    """{app: the last migration to apply before the switch}, from `pending` in forward order."""
    targets: dict[str, str] = {}
    for app, name in pending:
        if (app, name) not in waiting:
            targets[app] = name
    return targets


def main(mode: str) -> None:
    from django.core.management import call_command
    from django.db import DEFAULT_DB_ALIAS, connections
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connections[DEFAULT_DB_ALIAS])
    graph = executor.loader.graph
    plan = executor.migration_plan(graph.leaf_nodes())
    pending = [(migration.app_label, migration.name) for migration, backwards in plan if not backwards]
    marked = {
        (migration.app_label, migration.name)
        for migration, backwards in plan
        if not backwards and getattr(migration, "run_after_switch", False)
    }
    children = {key: [child.key for child in node.children] for key, node in graph.node_map.items()}
    waiting = waiting_for_switch(pending, marked, children)
    if mode == "pre":
        for app, name in pre_switch_targets(pending, waiting).items():
            call_command("migrate", app, name, interactive=False, verbosity=1)
    print(
        "SUMBG-MIGRATIONS "
        + json.dumps(
            {
                "pending": [".".join(node) for node in pending],
                "after_switch": [".".join(node) for node in pending if node in waiting],
            }
        )
    )


if "MODE" in globals():
    main(globals()["MODE"])
