"""Every code block of docs/async.md runs, as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parent.parent / "docs" / "async.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", DOC.read_text(), flags=re.MULTILINE | re.DOTALL)


def test_the_async_docs_have_examples() -> None:
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("source", BLOCKS, ids=[f"block-{n}" for n in range(len(BLOCKS))])
def test_a_block_of_the_async_docs_runs(source: str) -> None:
    exec(compile(source, str(DOC), "exec", dont_inherit=True), {"__name__": "docs_async"})
