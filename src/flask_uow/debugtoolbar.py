"""A Flask-DebugToolbar panel listing the units of work of the request.

Install the extra (``pip install flask-uow[debugtoolbar]``) and add the panel::

    app.config["DEBUG_TB_PANELS"] = [
        *DebugToolbarExtension._default_config(app)["DEBUG_TB_PANELS"],
        "flask_uow.debugtoolbar.UnitsPanel",
    ]

For each transaction and savepoint of the request the panel shows where it was opened,
its outcome, how long it lasted, how many statements it sent, how long it held its
connection and how long that connection sat idle in the transaction (with where the
longest idle gap ended when it passed the idle threshold). It watches the Database
registered with the app (``db.init_app(app)``) only while the toolbar is enabled.
"""

from __future__ import annotations

from dataclasses import dataclass
from time import perf_counter
from typing import TYPE_CHECKING, Any

from flask import current_app, g, has_request_context
from flask_debugtoolbar.panels import DebugPanel
from markupsafe import Markup

from ._frameworks import EXTENSION_KEY
from ._lifecycle import UnitKind
from ._watch import UnitTrace, watcher_for

if TYPE_CHECKING:
    from werkzeug import Request, Response

    from ._database import Database
    from ._unit import UnitOfWork

_RECORDS = "_flask_uow_panel_units"
_STARTED = "_flask_uow_panel_started"


@dataclass
class UnitRecord:
    """One transaction or savepoint of the request, as the panel shows it."""

    opened_at: str
    kind: str
    propagation: str
    read_only: bool
    outcome: str
    duration_ms: float
    statements: int | None = None
    hold_ms: float | None = None
    idle_ms: float | None = None
    longest_idle_ms: float | None = None
    idle_ended_at: str | None = None
    depth: int = 0


class PanelRecorder:
    """A watcher consumer that keeps the request's units in ``flask.g``, in order of entry."""

    def unit_entered(self, unit: UnitOfWork) -> None:
        kind = unit.kind
        if kind not in (UnitKind.OUTERMOST, UnitKind.SAVEPOINT) or not has_request_context():
            return
        record = UnitRecord(
            opened_at=str(unit.opened_at),
            kind=kind.value,
            propagation=unit.propagation.name,
            read_only=unit.read_only,
            outcome="active",
            duration_ms=0.0,
            depth=0 if kind is UnitKind.OUTERMOST else 1,
        )
        g.setdefault(_RECORDS, []).append(record)
        g.setdefault(_STARTED, {})[id(unit)] = (record, perf_counter())

    def unit_retrying(self, unit: UnitOfWork, error: BaseException, attempt: int) -> None:
        pass

    def unit_ended(self, unit: UnitOfWork, trace: UnitTrace | None) -> None:
        if not has_request_context():
            return
        entry = g.get(_STARTED, {}).pop(id(unit), None)
        if entry is None:
            return
        record, started = entry
        record.outcome = unit.outcome.value if unit.outcome is not None else "?"
        record.duration_ms = (perf_counter() - started) * 1000
        if trace is not None:
            record.statements = trace.statements
            record.hold_ms = trace.hold_time * 1000
            record.idle_ms = trace.idle_time * 1000
            record.longest_idle_ms = trace.longest_idle * 1000
            record.idle_ended_at = trace.longest_idle_ended_at


def _recorder(db: Database) -> PanelRecorder:
    watcher = watcher_for(db.runtime)
    for consumer in watcher.consumers:
        if isinstance(consumer, PanelRecorder):
            return consumer
    recorder = PanelRecorder()
    watcher.add(recorder)
    return recorder


class UnitsPanel(DebugPanel):
    """The request's units of work: outcome, duration, statements, idle time, origin."""

    name = "UnitsOfWork"
    has_content = True

    def process_request(self, request: Request) -> None:
        """Start recording the units this request opens; opens no unit itself."""
        db = current_app.extensions.get(EXTENSION_KEY)
        if db is not None:
            _recorder(db)
        g.pop(_RECORDS, None)
        g.pop(_STARTED, None)

    def process_response(self, request: Request, response: Response) -> None:
        """Keep the request's unit records for the panel; its units have ended by now."""
        self.records: list[UnitRecord] = list(g.get(_RECORDS, []))

    def _records(self) -> list[UnitRecord]:
        return getattr(self, "records", [])

    def nav_title(self) -> str:
        """The panel's name in the toolbar."""
        return "Units of work"

    def nav_subtitle(self) -> str:
        """How many transactions the request ran, and how long they sat idle."""
        records = self._records()
        outermost = [record for record in records if record.kind == "outermost"]
        idle = sum(record.idle_ms or 0 for record in outermost)
        return f"{len(outermost)} transactions, {idle:.1f} ms idle"

    def title(self) -> str:
        """The panel's heading."""
        return "Units of work"

    def url(self) -> str:
        """No page of its own: the panel shows its content inline."""
        return ""

    def content(self) -> str:
        """An HTML table of the request's units: outcome, duration, statements, idle time."""
        records = self._records()
        if not records:
            return str(Markup("<p>No unit of work ran a transaction in this request.</p>"))
        rows = []
        for index, record in enumerate(records):
            parity = "flDebugOdd" if index % 2 == 0 else "flDebugEven"
            idle_where = ""
            if record.idle_ended_at:
                gap = Markup("<br><small>longest gap ({:.1f} ms) ended at {}</small>")
                idle_where = gap.format(record.longest_idle_ms or 0, record.idle_ended_at)
            rows.append(
                Markup(
                    '<tr class="{}"><td>{}{}</td><td>{}</td><td>{}</td><td>{}</td>'
                    "<td>{:.1f}</td><td>{}</td><td>{}</td><td>{}{}</td></tr>"
                ).format(
                    parity,
                    Markup("&nbsp;&nbsp;&#8627; ") if record.depth else "",
                    record.kind + (" (read-only)" if record.read_only else ""),
                    record.propagation,
                    record.outcome,
                    record.opened_at,
                    record.duration_ms,
                    _number(record.statements),
                    _ms(record.hold_ms),
                    _ms(record.idle_ms),
                    idle_where,
                )
            )
        head = (
            "<table><thead><tr><th>Unit</th><th>Propagation</th><th>Outcome</th>"
            "<th>Opened at</th><th>ms</th><th>Statements</th><th>Connection held ms</th>"
            "<th>Idle in transaction ms</th></tr></thead><tbody>"
        )
        return str(Markup(head) + Markup("").join(rows) + Markup("</tbody></table>"))


def _number(value: int | None) -> Any:
    return "" if value is None else value


def _ms(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


__all__ = ["UnitsPanel", "UnitRecord"]
