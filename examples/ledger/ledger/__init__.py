"""A small banking ledger showing flask-uow: services declare transaction boundaries, the
adapter uses the ambient session, views stay thin. Start with ``ledger.app.create_app``."""
