"""Export flask-uow's metrics to Prometheus through the OpenTelemetry SDK.

    pip install 'flask-uow[otel]' opentelemetry-sdk opentelemetry-exporter-prometheus
    python examples/otel_prometheus.py            # serves on http://127.0.0.1:8000
    curl -X POST http://127.0.0.1:8000/transfers  # a few times
    curl http://127.0.0.1:8000/metrics            # flask_uow_* series among them

    python examples/otel_prometheus.py --once     # runs a few requests, prints /metrics

The app is deliberately tiny: two accounts and a transfer between them in one unit of
work. The OpenTelemetry SDK's Prometheus reader turns flask-uow's instruments into
``flask_uow_unit_duration_seconds``, ``flask_uow_connection_hold_time_seconds``,
``flask_uow_connection_idle_time_seconds`` (histograms, labelled by outcome and read-only;
``flask_uow_unit_duration_seconds_count`` counts the units) and ``flask_uow_retries_total``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import sqlalchemy as sa
from flask import Flask, Response
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import flask_uow.otel
from flask_uow import Database


class Base(DeclarativeBase):
    pass


class Account(Base):
    __tablename__ = "example_account"
    id: Mapped[int] = mapped_column(primary_key=True)
    balance: Mapped[int]


db = Database(metadata=Base.metadata)


@db.transactional(retries=3)
def transfer(source: int, target: int, amount: int) -> int:
    """Move ``amount`` between two accounts: both updates commit together, or neither."""
    db.session.execute(
        sa.update(Account).where(Account.id == source).values(balance=Account.balance - amount)
    )
    db.session.execute(
        sa.update(Account).where(Account.id == target).values(balance=Account.balance + amount)
    )
    return db.session.get_one(Account, source).balance


@db.transactional(read_only=True)
def balances() -> dict[int, int]:
    return {account.id: account.balance for account in db.session.scalars(sa.select(Account))}


def create_app(url: str, meter_provider: MeterProvider) -> Flask:
    app = Flask(__name__)
    app.config["UOW_DATABASE_URL"] = url
    db.init_app(app)
    flask_uow.otel.instrument(db, meter_provider=meter_provider)

    @app.post("/transfers")
    def post_transfer() -> dict[str, int]:
        return {"balance": transfer(1, 2, 10)}

    @app.get("/balances")
    def get_balances() -> dict[str, int]:
        return {str(key): value for key, value in balances().items()}

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(), mimetype=CONTENT_TYPE_LATEST)

    with app.app_context():
        db.create_all()
        with db.unit_of_work():
            if db.session.get(Account, 1) is None:
                db.session.add_all([Account(id=1, balance=1000), Account(id=2, balance=0)])
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="flask-uow metrics in Prometheus format")
    parser.add_argument("--once", action="store_true", help="run a few requests, print /metrics")
    parser.add_argument("--url", default=os.environ.get("DATABASE_URL"))
    args = parser.parse_args(argv)
    reader = PrometheusMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    with tempfile.TemporaryDirectory() as folder:
        url = args.url or "sqlite:///" + os.path.join(folder, "example.db")
        app = create_app(url, provider)
        try:
            if not args.once:
                app.run(host="127.0.0.1", port=8000)
                return 0
            client = app.test_client()
            for _ in range(3):
                client.post("/transfers")
            client.get("/balances")
            text = client.get("/metrics").get_data(as_text=True)
            print("\n".join(line for line in text.splitlines() if "flask_uow" in line))
        finally:
            flask_uow.otel.uninstrument(db)
            provider.shutdown()
            db.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
