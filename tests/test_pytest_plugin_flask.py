"""The pytest plugin's Flask options fail with what to change when they name the wrong thing."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.flask

WEB = """
from flask import Flask

not_an_app = 42


def make_nothing():
    return None


def app_without_database():
    return Flask("bare")
"""


@pytest.mark.parametrize("target", ["not_an_app", "make_nothing"])
def test_an_app_option_that_names_no_flask_app_says_what_it_got(
    pytester: pytest.Pytester, target: str
) -> None:
    pytester.makeini(f"[pytest]\npythonpath = .\nflask_uow_app = web:{target}\n")
    pytester.makepyfile(web=WEB, test_it="def test_needs_it(isolated_db):\n    pass\n")

    result = pytester.runpytest()

    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [f"*flask_uow_app = 'web:{target}' is neither a Flask app nor a factory returning one*"]
    )


def test_an_app_without_a_flask_uow_database_says_to_call_init_app(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeini("[pytest]\npythonpath = .\nflask_uow_app = web:app_without_database\n")
    pytester.makepyfile(web=WEB, test_it="def test_needs_it(isolated_db):\n    pass\n")

    result = pytester.runpytest()

    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*The Flask app 'bare'*has no flask-uow Database*init_app*"])
