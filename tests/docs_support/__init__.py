"""Code the doc-example collector (tests/test_docs.py) gives to documentation blocks."""
