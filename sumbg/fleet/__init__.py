"""`sumbg fleet`: every site on every host of a fleet file, and upgrading them to a new sum-core.

sumbg on each host does the work; the fleet only decides and drives, over each host's link
(adapters.ssh), reading each host's `--json` answers:

- status: every host's `sumbg status --json`, side by side; a host that does not
  answer is shown as such and hides nothing else.
- upgrade: for each site, the release to deploy is the newest tag of its client repo
  whose sum-core pin is the asked version (`sumbg releases --json` on its host). The
  canary sites go first, one at a time; then the rest, at most `parallel` at a time per
  host and `max_parallel` in the fleet. The first failure stops new upgrades (running
  ones finish). Every move is recorded in a run file, so `--resume` continues a stopped
  or killed run.

Modules, each importing only those listed before it:
  answers  the hosts' JSON answers read into typed records (the one place that reads them)
  view     HostView; `fleet status` as a table, a JSON document and the sites matrix
  plan     pure: selection of sites and groups, the release, Move, plan_moves, Schedule
  run      the run record (Outcome, RunOptions, FleetRun), its file (RunStore), exit codes
  driver   FleetDriver, the one place with side effects, and upgrade_fleet
"""
