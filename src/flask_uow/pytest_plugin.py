"""pytest fixtures that run each test's units of work in a transaction that is undone."""
