"""Every row of ``decide_ending``, the one function that says how a unit ends, and the guide's
table "One unit, start to end" checked against it."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from flask_uow import Outcome, UnitKind
from flask_uow import _ending as ending_module
from flask_uow._ending import (
    FAILED_INTERRUPTED,
    FAILED_LOST,
    FAILED_REFUSED,
    Ending,
    decide_ending,
)

OUT, SP, JN, NO = UnitKind.OUTERMOST, UnitKind.SAVEPOINT, UnitKind.JOINED, UnitKind.NONE

# kind, facts, then what ending does: SQL sent, outcome, hooks, what is raised.
ROWS: list[tuple[UnitKind, dict[str, object], tuple[str, Outcome, str, str]]] = [
    # -- an outermost unit -----------------------------------------------------------------
    (OUT, {}, ("COMMIT", Outcome.COMMITTED, "on_commit", "nothing")),
    (OUT, {"session_opened": False}, ("nothing", Outcome.COMMITTED, "on_commit", "nothing")),
    (OUT, {"session_opened": False, "read_only": True},
        ("nothing", Outcome.READ_ONLY, "on_commit", "nothing")),
    (OUT, {"read_only": True}, ("close", Outcome.READ_ONLY, "on_commit", "nothing")),
    (OUT, {"read_only": True, "commit_failure": FAILED_REFUSED},
        ("ROLLBACK", Outcome.ROLLED_BACK, "on_rollback", "the error of COMMIT or RELEASE")),
    (OUT, {"aborted": True},
        ("ROLLBACK", Outcome.DOOMED, "on_rollback", "UnexpectedRollback, aborted")),
    (OUT, {"doomed": True},
        ("ROLLBACK", Outcome.DOOMED, "on_rollback", "UnexpectedRollback, doomed")),
    (OUT, {"doomed": True, "session_opened": False},
        ("nothing", Outcome.DOOMED, "on_rollback", "UnexpectedRollback, doomed")),
    (OUT, {"failed": True}, ("ROLLBACK", Outcome.ROLLED_BACK, "on_rollback", "the exception")),
    (OUT, {"failed": True, "doomed": True},
        ("ROLLBACK", Outcome.ROLLED_BACK, "on_rollback", "the exception")),
    (OUT, {"failed": True, "retry_pending": True},
        ("ROLLBACK", Outcome.ROLLED_BACK, "held for the retry", "the exception")),
    (OUT, {"failed": True, "session_opened": False},
        ("nothing", Outcome.ROLLED_BACK, "on_rollback", "the exception")),
    (OUT, {"failed": True, "session_opened": False, "retry_pending": True},
        ("nothing", Outcome.ROLLED_BACK, "held for the retry", "the exception")),
    (OUT, {"rollback_requested": True},
        ("ROLLBACK", Outcome.ROLLED_BACK, "on_rollback", "nothing")),
    (OUT, {"rollback_requested": True, "doomed": True},
        ("ROLLBACK", Outcome.ROLLED_BACK, "on_rollback", "nothing")),
    (OUT, {"rollback_requested": True, "session_opened": False},
        ("nothing", Outcome.ROLLED_BACK, "on_rollback", "nothing")),
    (OUT, {"commit_failure": FAILED_REFUSED},
        ("ROLLBACK", Outcome.ROLLED_BACK, "on_rollback", "the error of COMMIT or RELEASE")),
    (OUT, {"commit_failure": FAILED_REFUSED, "retry_pending": True},
        ("ROLLBACK", Outcome.ROLLED_BACK, "held for the retry", "the error of COMMIT or RELEASE")),
    (OUT, {"commit_failure": FAILED_LOST},
        ("ROLLBACK", Outcome.OUTCOME_UNKNOWN, "on_outcome_unknown", "CommitOutcomeUnknown")),
    (OUT, {"commit_failure": FAILED_INTERRUPTED},
        ("ROLLBACK", Outcome.OUTCOME_UNKNOWN, "on_outcome_unknown", "the interruption")),
    # -- a savepoint -----------------------------------------------------------------------
    (SP, {}, ("RELEASE SAVEPOINT", Outcome.RELEASED, "handed to the enclosing unit", "nothing")),
    (SP, {"commit_failure": FAILED_REFUSED},
        ("ROLLBACK TO SAVEPOINT", Outcome.ROLLED_BACK, "discarded",
         "the error of COMMIT or RELEASE")),
    (SP, {"aborted": True},
        ("ROLLBACK TO SAVEPOINT", Outcome.DOOMED, "discarded", "UnexpectedRollback, aborted")),
    (SP, {"doomed": True},
        ("ROLLBACK TO SAVEPOINT", Outcome.DOOMED, "discarded", "UnexpectedRollback, doomed")),
    (SP, {"failed": True},
        ("ROLLBACK TO SAVEPOINT", Outcome.ROLLED_BACK, "discarded", "the exception")),
    (SP, {"rollback_requested": True},
        ("ROLLBACK TO SAVEPOINT", Outcome.ROLLED_BACK, "discarded", "nothing")),
    # -- a joined unit ---------------------------------------------------------------------
    (JN, {}, ("nothing", Outcome.JOINED, "none", "nothing")),
    (JN, {"doomed": True}, ("nothing", Outcome.ROLLED_BACK, "none", "nothing")),
    (JN, {"failed": True}, ("doom", Outcome.ROLLED_BACK, "none", "the exception")),
    (JN, {"rollback_requested": True}, ("doom", Outcome.ROLLED_BACK, "none", "nothing")),
    # -- a unit with no transaction --------------------------------------------------------
    (NO, {}, ("nothing", Outcome.NO_TRANSACTION, "none", "nothing")),
    (NO, {"failed": True}, ("nothing", Outcome.NO_TRANSACTION, "none", "the exception")),
]  # fmt: skip

BASE_FACTS = {"failed": False, "rollback_requested": False, "doomed": False}


@pytest.mark.parametrize(("kind", "facts", "expected"), ROWS)
def test_each_row_of_the_ending_table(
    kind: UnitKind, facts: dict[str, object], expected: tuple[str, Outcome, str, str]
) -> None:
    ending = decide_ending(kind, **{**BASE_FACTS, **facts})  # type: ignore[arg-type]
    assert (ending.send, ending.outcome, ending.hooks, ending.raises) == expected


def test_every_ending_the_function_can_return_is_a_listed_row() -> None:
    listed = {expected for _, _, expected in ROWS}
    constants = {
        (value.send, value.outcome, value.hooks, value.raises)
        for value in vars(ending_module).values()
        if isinstance(value, Ending)
    }
    assert constants <= listed
    booleans = ("failed", "rollback_requested", "doomed", "read_only", "session_opened",
                "aborted", "retry_pending")  # fmt: skip
    for kind in (OUT, SP, JN, NO, None):
        for values in itertools.product((False, True), repeat=len(booleans)):
            for failure in (None, FAILED_REFUSED, FAILED_LOST, FAILED_INTERRUPTED):
                facts = dict(zip(booleans, values, strict=True))
                ending = decide_ending(kind, commit_failure=failure, **facts)
                assert (ending.send, ending.outcome, ending.hooks, ending.raises) in listed


# -- the guide's table ---------------------------------------------------------------------------

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "guide.md"

GUIDE_ROWS: dict[str, dict[str, object]] = {
    "normally, or `return` from a decorated function": {},
    "any exception": {"failed": True},
    "normally, after `uow.set_rollback()`": {"rollback_requested": True},
    "normally, but COMMIT fails": {"commit_failure": FAILED_REFUSED},
    "normally, but the transaction can no longer commit": {"aborted": True},
    "normally, but the connection is lost while COMMIT is on its way": {
        "commit_failure": FAILED_LOST
    },
    "normally, but an interruption": {"commit_failure": FAILED_INTERRUPTED},
}
"""The start of each row's first column, and the facts of an outermost unit it describes."""

SEEN = {
    "the return value": "nothing",
    "nothing raised": "nothing",
    "the same exception object": "the exception",
    "the database error": "the error of COMMIT or RELEASE",
    "`UnexpectedRollback`": "UnexpectedRollback, aborted",
    "`CommitOutcomeUnknown`": "CommitOutcomeUnknown",
    "the interruption itself": "the interruption",
}
"""The start of the guide's "What you see" and the ``raises`` of the ending it names."""


def guide_rows() -> list[list[str]]:
    text = GUIDE.read_text(encoding="utf-8")
    section = text.split("## One unit, start to end", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[1:]]


def test_the_guides_table_says_what_the_ending_table_decides() -> None:
    rows = guide_rows()
    assert len(rows) == len(GUIDE_ROWS), "a row of the guide has no facts here, or one is gone"
    for how, transaction, session, hooks, seen in rows:
        facts = next(f for start, f in GUIDE_ROWS.items() if how.startswith(start))
        ending = decide_ending(UnitKind.OUTERMOST, **{**BASE_FACTS, **facts})  # type: ignore[arg-type]
        sent = "unknown" if ending.outcome is Outcome.OUTCOME_UNKNOWN else ending.send
        assert (transaction, session) == (sent, "closed"), how
        assert hooks.strip("`") == ending.hooks, how
        raised = next(r for start, r in SEEN.items() if seen.startswith(start))
        assert raised == ending.raises, how
