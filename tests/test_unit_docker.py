"""sumbg.adapters.docker at its boundary, without an engine: what python-on-whales raises or returns
becomes sumbg's own errors and results."""

from __future__ import annotations

import pytest

from sumbg.adapters.docker import Engine, ExecResult
from sumbg.errors import DockerError


def test_a_missing_docker_client_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no docker binary on the PATH
    with pytest.raises(DockerError) as info:
        Engine().ping()
    assert info.value.message == "the docker client is not installed (`make setup` installs it)"


def test_capture_passes_input_and_environment_and_keeps_both_streams():
    script = 'cat; printf "%s" "$SUMBG_TEST_VALUE" >&2'
    result = Engine._capture(["sh", "-c", script], env={"SUMBG_TEST_VALUE": "from env"}, input=b"from stdin\n")
    assert result == ExecResult(0, "from stdin", "from env")
    assert result.output == "from stdin\nfrom env"


def test_capture_without_input():
    assert Engine._capture(["sh", "-c", "echo done"]) == ExecResult(0, "done", "")


def test_capture_of_a_failing_command_returns_its_exit_code_and_output():
    result = Engine._capture(["sh", "-c", "echo partial; echo broken >&2; exit 3"])
    assert result == ExecResult(3, "partial\n", "broken\n")
    assert result.output == "partial\n\nbroken"
