"""The ledger's one :class:`flask_uow.Database`; the Flask app gives it a URL in ``create_app``."""

from flask_uow import Database

from .models import Base

db = Database(metadata=Base.metadata)
"""Units of work for the ledger. Services declare boundaries with ``@db.transactional``; the
adapter reads the ambient session with ``db.session``. Nothing here connects until an app with
``db.init_app(app)`` is active. It adds the outbox tables to ``Base.metadata`` (migrations,
``create_all``)."""
