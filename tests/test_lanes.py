"""The test lanes' own rules (tests/conftest.py): a ``one_store`` test runs on SQLite only, and the
marker is checked: a test so marked that runs SQL fails, naming the marker to remove."""

from __future__ import annotations

from pathlib import Path

pytest_plugins = ["pytester"]

CONFTEST = (Path(__file__).resolve().parent / "conftest.py").read_text()

TESTS = '''
import pytest

@pytest.mark.one_store
def test_refuses_before_storing(store_url):
    assert store_url

@pytest.mark.one_store
def test_claims_it_but_queries(store_url):
    from sqlalchemy import create_engine, text
    with create_engine(store_url).connect() as c:
        c.execute(text("SELECT 1"))

def test_unmarked(store_url):
    assert store_url
'''


def test_one_store_tests_run_once_and_the_marker_is_checked(pytester):
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_sample=TESTS)
    result = pytester.runpytest("-p", "no:cacheprovider", "-k", "sqlite", "-rA")
    result.assert_outcomes(passed=2, failed=1, deselected=3)
    result.stdout.fnmatch_lines(["*test_claims_it_but_queries*is marked one_store but used the store*"])
    collected = pytester.runpytest("-p", "no:cacheprovider", "--collect-only", "-q")
    names = collected.stdout.str()
    assert "test_refuses_before_storing[sqlite]" in names and "test_refuses_before_storing[postgresql]" not in names
    assert "test_unmarked[postgresql]" in names
