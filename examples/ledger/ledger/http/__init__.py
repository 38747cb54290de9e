"""HTTP plumbing, kept apart from the answer: JSON shapes, the OpenAPI document, error handlers.

Nothing here opens, commits or closes a unit of work; the views in ``ledger.views`` call the
services, and the services declare their own boundaries.
"""
