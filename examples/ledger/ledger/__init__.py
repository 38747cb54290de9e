"""A small banking ledger showing flask-uow, laid out as the question was: ``services/`` declare
transaction boundaries, ``adapter`` runs every query on the ambient session, ``models`` holds the
tables, ``app`` builds the app, and the views stay thin. HTTP plumbing is in ``ledger.http``."""
