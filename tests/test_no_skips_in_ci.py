"""Skips are visible outside CI and failures under ``CI=true`` (tests/no_skips_in_ci.py), seen
the way a developer sees them: the output of a pytest run over a small example suite."""
from __future__ import annotations

import pytest

from conftest import ROOT

EXAMPLES = """
    import pytest

    def test_passes():
        pass

    def test_skips():
        pytest.skip("nginx is not installed")

    @pytest.fixture
    def server():
        pytest.skip("redis-server is not installed")

    def test_needs_a_server(server):
        pass

    @pytest.mark.xfail(reason="a known bug, not a skip")
    def test_known_bug():
        assert False
"""

SKIPPED_MODULE = """
    import pytest

    pytest.skip("openssl is not installed", allow_module_level=True)
"""


def run(pytester: pytest.Pytester, **modules: str) -> pytest.RunResult:
    """Run example test modules with the project's pytest settings (pyproject's addopts) and
    the plugin, loaded as tests/conftest.py loads it."""
    pytester.makeconftest("from no_skips_in_ci import pytest_make_collect_report, pytest_runtest_makereport")
    pytester.makepyfile(**modules)
    return pytester.runpytest("-c", str(ROOT / "pyproject.toml"), "--rootdir", str(pytester.path), ".")


def test_outside_ci_a_skip_names_its_reason_in_the_summary(pytester: pytest.Pytester, monkeypatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    result = run(pytester, test_examples=EXAMPLES, test_skipped_module=SKIPPED_MODULE)

    result.assert_outcomes(passed=1, skipped=3, xfailed=1)
    result.stdout.fnmatch_lines_random([
        "SKIPPED [[]1[]] test_examples.py:*: nginx is not installed",
        "SKIPPED [[]1[]] test_examples.py:*: redis-server is not installed",
        "SKIPPED [[]1[]] test_skipped_module.py:*: openssl is not installed",
    ])
    assert result.ret == pytest.ExitCode.OK


def test_under_ci_a_skipped_test_or_fixture_fails_with_its_reason(pytester: pytest.Pytester, monkeypatch) -> None:
    monkeypatch.setenv("CI", "true")
    result = run(pytester, test_examples=EXAMPLES)

    # The test that skipped fails; a fixture that skipped is an error; xfail is left alone.
    result.assert_outcomes(passed=1, failed=1, errors=1, xfailed=1)
    result.stdout.fnmatch_lines_random([
        "*skipped under CI=true, where nothing may skip: Skipped: nginx is not installed (*test_examples.py:*)",
        "*skipped under CI=true, where nothing may skip: Skipped: redis-server is not installed (*test_examples.py:*)",
    ])
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_under_ci_a_module_that_skips_is_a_collection_error(pytester: pytest.Pytester, monkeypatch) -> None:
    monkeypatch.setenv("CI", "true")
    result = run(pytester, test_skipped_module=SKIPPED_MODULE)

    result.stdout.fnmatch_lines(["*skipped under CI=true, where nothing may skip: *openssl is not installed*"])
    assert result.ret == pytest.ExitCode.INTERRUPTED  # collection errors stop the session
