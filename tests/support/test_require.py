"""The ``requires`` marker: a missing tool fails under CI and skips elsewhere."""

from __future__ import annotations

import pytest

from tests.support import require as require_module
from tests.support.require import NEEDS, Need, missing, require


@pytest.fixture
def absent_tool(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setitem(NEEDS, "absent-tool", Need(lambda: False, "apt-get install absent"))
    return "absent-tool"


def test_a_missing_tool_fails_under_ci(absent_tool: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"absent-tool \(apt-get install absent\)"):
        require("sipp", absent_tool)


def test_a_missing_tool_skips_on_a_developer_machine(
    absent_tool: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install absent"):
        require(absent_tool)


def test_present_tools_pass_and_unknown_names_are_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(NEEDS, "here", Need(lambda: True, "-"))
    monkeypatch.setenv("CI", "true")
    require("here")
    assert missing("here") == []
    with pytest.raises(ValueError, match="unknown requirement"):
        require("no-such-need")


def test_every_need_is_met_under_ci() -> None:
    """CI installs everything the tests need: nothing may be missing there."""
    if require_module.in_ci():
        assert missing(*NEEDS) == []


def test_the_marker_is_enforced_before_the_test_runs(
    absent_tool: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests import conftest

    class Item:
        def iter_markers(self, name: str) -> list[pytest.Mark]:
            assert name == "requires"
            return [pytest.mark.requires(absent_tool).mark]

    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception):
        conftest.pytest_runtest_setup(Item())  # type: ignore[arg-type]
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception):
        conftest.pytest_runtest_setup(Item())  # type: ignore[arg-type]
