"""A UI test without its browser is never skipped silently: it skips with the reason, and in CI it fails."""

import pytest

from recopipeline_tests import conftest


class Item:
    def __init__(self, *markers: str):
        self.markers = markers

    def get_closest_marker(self, name: str):
        return name if name in self.markers else None


@pytest.fixture
def no_chromium(monkeypatch, tmp_path):
    monkeypatch.setattr(conftest, "CHROMIUM", tmp_path / "chromium")


@pytest.mark.parametrize("ci", ["", "false"])
def test_without_chromium_a_ui_test_skips_with_the_reason(no_chromium, monkeypatch, ci):
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.skip.Exception, match="need Debian's Chromium at .*chromium"):
        conftest.pytest_runtest_setup(Item("ui", "slow"))


@pytest.mark.parametrize("ci", ["true", "1"])
def test_without_chromium_a_ui_test_fails_in_ci(no_chromium, monkeypatch, ci):
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.fail.Exception, match="in CI they must run, not skip"):
        conftest.pytest_runtest_setup(Item("ui", "slow"))


def test_other_tests_and_a_present_chromium_are_left_alone(monkeypatch, tmp_path):
    monkeypatch.setenv("CI", "true")
    monkeypatch.setattr(conftest, "CHROMIUM", tmp_path / "absent")
    conftest.pytest_runtest_setup(Item("slow"))
    monkeypatch.setattr(conftest, "CHROMIUM", tmp_path)  # exists
    conftest.pytest_runtest_setup(Item("ui"))
