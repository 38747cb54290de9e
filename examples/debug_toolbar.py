"""The flask-uow panel of Flask-DebugToolbar, on a page whose transaction waits on a slow call.

    pip install 'flask-uow[debugtoolbar]'
    flask --app examples/debug_toolbar.py run --debug
    open http://127.0.0.1:5000/transfer   (then "Units of work" in the toolbar)

``/transfer?open=units`` opens the panel by itself (used for the screenshot in
docs/observability.md). The page's transfer holds its transaction open across a
simulated 150 ms HTTP call, which the panel and the idle warning both point at.
"""

from __future__ import annotations

import os
import tempfile
import time

import sqlalchemy as sa
from flask import Flask, Response, request
from flask_debugtoolbar import DebugToolbarExtension
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from flask_uow import Database, Propagation


class Base(DeclarativeBase):
    pass


class Account(Base):
    __tablename__ = "toolbar_account"
    id: Mapped[int] = mapped_column(primary_key=True)
    balance: Mapped[int]


class AuditEntry(Base):
    __tablename__ = "toolbar_audit"
    id: Mapped[int] = mapped_column(primary_key=True)
    text: Mapped[str]


db = Database(metadata=Base.metadata)


def call_fraud_check() -> None:
    time.sleep(0.15)  # stands for an HTTP call made while the transaction is open


@db.transactional
def transfer(source: int, target: int, amount: int) -> None:
    db.session.execute(
        sa.update(Account).where(Account.id == source).values(balance=Account.balance - amount)
    )
    call_fraud_check()
    db.session.execute(
        sa.update(Account).where(Account.id == target).values(balance=Account.balance + amount)
    )
    audit(f"moved {amount} from {source} to {target}")


@db.transactional(propagation=Propagation.NESTED)
def audit(text: str) -> None:
    db.session.add(AuditEntry(text=text))


@db.transactional(read_only=True)
def balances() -> list[tuple[int, int]]:
    return [(a.id, a.balance) for a in db.session.scalars(sa.select(Account).order_by(Account.id))]


_OPEN_PANEL = """<script>
window.addEventListener("load", function () {
  setTimeout(function () {
    var link = document.querySelector("a.flDebugUnitsOfWorkPanel");
    if (link) { link.click(); }
  }, 300);
});
</script>"""


def create_app(url: str | None = None) -> Flask:
    app = Flask(__name__)
    app.debug = True
    url = url or "sqlite:///" + os.path.join(tempfile.mkdtemp(), "toolbar.db")
    app.config.update(
        SECRET_KEY="example only",
        UOW_DATABASE_URL=url,
        DEBUG_TB_INTERCEPT_REDIRECTS=False,
        DEBUG_TB_PANELS=[
            "flask_debugtoolbar.panels.timer.TimerDebugPanel",
            "flask_uow.debugtoolbar.UnitsPanel",
            "flask_debugtoolbar.panels.logger.LoggingPanel",
        ],
    )
    db.init_app(app)  # in debug mode the idle warning is on (UOW_WARN_IDLE_MS = 100)
    DebugToolbarExtension(app)

    @app.get("/transfer")
    def page() -> str:
        transfer(1, 2, 10)
        rows = "".join(f"<li>account {i}: {balance}</li>" for i, balance in balances())
        script = _OPEN_PANEL if request.args.get("open") == "units" else ""
        return f"<html><body><h1>Transfer done</h1><ul>{rows}</ul>{script}</body></html>"

    @app.after_request
    def no_cache(response: Response) -> Response:
        response.headers["Cache-Control"] = "no-store"
        return response

    with app.app_context():
        db.create_all()
        with db.unit_of_work():
            if db.session.get(Account, 1) is None:
                db.session.add_all([Account(id=1, balance=1000), Account(id=2, balance=0)])
    return app


app = create_app(os.environ.get("DATABASE_URL"))
