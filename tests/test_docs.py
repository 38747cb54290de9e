"""Every code block of README.md and docs/*.md runs as a test.

A small collector of our own rather than sybil or pytest-examples: it needs no dependency,
it runs whole test modules of the docs through pytest itself (``pytester``), and its
fixtures are plain Python below. pytest-examples is built to check printed output and
formatting; sybil would do, but its Markdown directives and namespaces would be one more
thing to learn for a feature of some 150 lines.

The convention, for whoever writes docs (an HTML comment right before a block gives it
options; GitHub does not show it):

- ```` ```python ```` blocks run, each in a fresh module of its own with a temporary
  working directory, so a relative ``sqlite:///app.db`` lands in a scratch folder.
  They run as written: no hidden code is added before or after.
- ``<!-- doc: fixtures=db,models -->`` fills the module with the names a fixture
  provides before the block runs (the fixtures are the ``fixture_*`` functions below,
  e.g. ``models``: ``Base``, ``Customer``, ``Account``; ``db``: a ``Database`` on a
  SQLite file with those tables created). Use them where repeating the setup would hide
  what the block shows.
- ``<!-- doc: continue -->`` runs the block in the module of the block before it in the
  same file (one test for the chain), for a story told in several blocks.
- ``<!-- doc: file=conftest.py -->`` (or any file name) does not run the block: it saves
  it as that file of the file's pytest project (several blocks with one name are joined in
  order). ``<!-- doc: pytest -->`` saves the block as ``test_doc.py`` next to those files
  (which it then forgets), with the ``myapp`` package of
  ``tests/docs_support`` (a small app with ``db``, ``create_app``, models and services),
  and runs pytest there in a subprocess, on SQLite files (``TEST_DATABASE_URL`` is set to
  one): every ``test_`` function of the block must pass. ``<!-- doc: pytest fixtures=app
  -->`` adds the conftest ``tests/docs_support/pytest_fixtures/app.py`` (a ``uow_app``).
  A ``file=`` block that no later ``pytest`` block uses fails the collector.
- ```` ```toml ```` blocks must parse (and run as ``file=pyproject.toml`` when marked so).
- ```` ```console ```` blocks are shell sessions: they are not run (they install packages,
  start servers or build the whole project), but each ``$ make TARGET`` must name a target
  of the Makefile and each ``$ flask ... uow COMMAND`` a command of ``flask uow``.
- Blocks without a language are diagrams or output, not code.
- Any other language fails the collector, so that a new kind of block gets a decision.
"""

from __future__ import annotations

import ast
import importlib
import logging
import re
import shutil
import sys
import tomllib
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
SUPPORT = Path(__file__).resolve().parent / "docs_support"
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\S*)\s*$")
OPTIONS = re.compile(r"^<!--\s*doc:\s*(.*?)\s*-->\s*$")
KNOWN_LANGUAGES = {"python", "toml", "console", ""}
# Imported before any pytester run takes its snapshot of sys.modules, so that the runs share
# them: SQLAlchemy warns when a dialect module is imported a second time.
for _module in ("sqlalchemy.dialects.postgresql", "sqlalchemy.dialects.mysql", "flask_migrate"):
    importlib.import_module(_module)


@dataclass
class Block:
    """One fenced block of a Markdown file and the options of the comment before it."""

    path: Path
    line: int
    language: str
    source: str
    options: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def read_blocks(path: Path) -> list[Block]:
    """The fenced blocks of ``path``, in order, with their options."""
    blocks: list[Block] = []
    lines = path.read_text().splitlines()
    options: dict[str, str] = {}
    index = 0
    while index < len(lines):
        text = lines[index]
        found = OPTIONS.match(text)
        if found:
            options = parse_options(found.group(1))
        fence = FENCE.match(text)
        if fence:
            start = index
            index += 1
            body = []
            while index < len(lines) and lines[index] != "```":
                body.append(lines[index])
                index += 1
            blocks.append(Block(path, start + 1, fence.group(1), "\n".join(body) + "\n", options))
            options = {}
        elif text.strip() and not found:
            options = {}
        index += 1
    return blocks


OPTION_NAMES = {"fixtures", "continue", "file", "pytest"}


def parse_options(text: str) -> dict[str, str]:
    options = {}
    for word in text.split():
        key, _, value = word.partition("=")
        assert key in OPTION_NAMES, f"unknown doc option {key!r} in <!-- doc: {text} -->"
        options[key] = value
    return options


# -- fixtures that blocks can name ----------------------------------------------------------


def fixture_models(folder: Path) -> dict[str, Any]:
    """``Base``, ``Customer`` and ``Account`` from ``tests/docs_support/models.py``."""
    from tests.docs_support import models

    return {"Base": models.Base, "Customer": models.Customer, "Account": models.Account}


def fixture_db(folder: Path) -> dict[str, Any]:
    """``db``: a Database on a SQLite file in the block's folder, with the models' tables."""
    from flask_uow import Database

    names = fixture_models(folder)
    db = Database(f"sqlite:///{folder / 'docs.db'}", metadata=names["Base"].metadata)
    db.create_all()
    return {**names, "db": db}


def fixture_adapter(folder: Path) -> dict[str, Any]:
    """``adapter``: the data-access object of the docs, on ``db`` (implies ``db``)."""
    from tests.docs_support.models import Adapter

    names = fixture_db(folder)
    return {**names, "adapter": Adapter(names["db"])}


FIXTURES: dict[str, Callable[[Path], dict[str, Any]]] = {
    "models": fixture_models,
    "db": fixture_db,
    "adapter": fixture_adapter,
}


# -- what runs -------------------------------------------------------------------------------


@dataclass
class Case:
    """One test: a chain of Python blocks, a pytest run, or a block that is checked only."""

    kind: str
    blocks: list[Block]
    files: dict[str, list[Block]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.blocks[0].name


def cases() -> Iterator[Case]:
    for path in DOCUMENTS:
        project: dict[str, list[Block]] = {}
        chain: Case | None = None
        for block in read_blocks(path):
            if block.language not in KNOWN_LANGUAGES:
                raise AssertionError(
                    f"{block.name}: no rule for ```{block.language} blocks; see tests/test_docs.py"
                )
            if "file" in block.options:
                project.setdefault(block.options["file"], []).append(block)
                yield Case("parse", [block])
                continue
            if block.language == "python" and "pytest" in block.options:
                yield Case(
                    "pytest", [block], {name: list(parts) for name, parts in project.items()}
                )
                project.clear()
                continue
            if block.language == "python":
                if "continue" in block.options:
                    assert chain is not None, f"{block.name}: 'continue' with no block before"
                    chain.blocks.append(block)
                    continue
                if chain is not None:
                    yield chain
                chain = Case("python", [block])
                continue
            if block.language:
                yield Case(block.language, [block])
        if chain is not None:
            yield chain
        assert not project, f"{path.name}: file= blocks {sorted(project)} are never run"


CASES = list(cases())


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_doc_block(case: Case, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    monkeypatch = request.getfixturevalue("monkeypatch")
    if case.kind == "pytest":
        run_pytest(case, request.getfixturevalue("pytester"), monkeypatch)
        return
    monkeypatch.chdir(tmp_path)
    if case.kind == "python":
        run_python(case, tmp_path)
    elif case.kind == "parse":
        check_parses(case.blocks[0])
    elif case.kind == "toml":
        tomllib.loads(case.blocks[0].source)
    elif case.kind == "console":
        check_console(case.blocks[0])
    else:  # pragma: no cover - cases() yields no other kind
        raise AssertionError(case.kind)


def run_python(case: Case, folder: Path) -> None:
    module = types.ModuleType("doc_example")
    module.__file__ = str(folder / "doc_example.py")
    sys.modules["doc_example"] = module
    loggers = saved_loggers()  # Flask-Alembic and Alembic configure logging when set up
    try:
        for block in case.blocks:
            for name in filter(None, block.options.get("fixtures", "").split(",")):
                module.__dict__.update(FIXTURES[name](folder))
            code = compile(block.source, block.name, "exec")
            exec(code, module.__dict__)
    finally:
        del sys.modules["doc_example"]
        dispose_databases(module.__dict__)
        restore_loggers(loggers)


LoggerState = tuple[logging.Logger, bool, int, list[logging.Handler], bool]


def saved_loggers() -> list[LoggerState]:
    loggers = [logging.root, *logging.root.manager.loggerDict.values()]
    return [
        (logger, logger.disabled, logger.level, list(logger.handlers), logger.propagate)
        for logger in loggers
        if isinstance(logger, logging.Logger)
    ]


def restore_loggers(saved: list[LoggerState]) -> None:
    for logger, disabled, level, handlers, propagate in saved:
        logger.disabled, logger.propagate = disabled, propagate
        logger.setLevel(level)
        logger.handlers[:] = handlers


def dispose_databases(names: dict[str, Any]) -> None:
    from flask_uow import Database

    for value in names.values():
        if isinstance(value, Database):
            value.dispose()


def check_parses(block: Block) -> None:
    if block.language == "toml":
        tomllib.loads(block.source)
    else:
        ast.parse(block.source, block.name)


def run_pytest(case: Case, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run the block as a test module in a pytest session of its own, in this process.

    ``pytester`` restores ``sys.modules`` afterwards, so each run imports a fresh ``myapp``.
    """
    block = case.blocks[0]
    project = pytester.path
    shutil.copytree(SUPPORT / "myapp", project / "myapp")
    for name, parts in case.files.items():
        (project / name).write_text("\n\n".join(part.source for part in parts))
    conftest = "".join(
        (SUPPORT / "pytest_fixtures" / f"{name}.py").read_text()
        for name in filter(None, block.options.get("fixtures", "").split(","))
    )
    if conftest:
        assert "conftest.py" not in case.files, f"{block.name}: fixtures= and a conftest.py"
        (project / "conftest.py").write_text(conftest)
    (project / "test_doc.py").write_text(block.source)
    tests = len(re.findall(r"^\s*def test_", block.source, re.MULTILINE))
    assert tests, f"{block.name}: a pytest block needs at least one test function"
    monkeypatch.setenv("TEST_DATABASE_URL", "sqlite:///myapp_test.db")
    for private in ("PYTEST_XDIST_WORKER", "TEST_POSTGRESQL_URL", "TEST_MARIADB_URL"):
        monkeypatch.delenv(private, raising=False)  # docs examples run on SQLite files
    monkeypatch.chdir(project)
    pytester.syspathinsert(project)
    result = pytester.runpytest("-p", "no:cacheprovider", "-W", "error", "-rfE")
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed") == tests and set(outcomes) <= {"passed", "skipped"}, (
        f"{block.name}: pytest in {project}\n" + "\n".join(result.outlines)
    )


def check_console(block: Block) -> None:
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([A-Za-z0-9_.-]+):", makefile, re.MULTILINE))
    from flask import current_app
    from flask.cli import AppGroup

    from flask_uow._cli import command_group

    commands = set(command_group(AppGroup, current_app).commands)
    for line in block.source.replace("\\\n", " ").splitlines():
        if not line.startswith("$ "):
            continue
        words = line[2:].split("#")[0].split()
        while words and "=" in words[0]:
            words.pop(0)  # VARIABLE=value before the command
        if words and words[0] == "make":
            for target in (word for word in words[1:] if "=" not in word):
                assert target in targets, f"{block.name}: make has no target {target!r}"
        if words[:2] == ["python", "-m"]:
            module = ROOT / (words[2].replace(".", "/") + ".py")
            assert module.is_file(), f"{block.name}: no module {words[2]} in the repository"
        if words and words[0] == "flask" and "uow" in words:
            command = words[words.index("uow") + 1]
            assert command in commands, f"{block.name}: 'flask uow' has no command {command!r}"


def test_every_fenced_block_of_the_docs_is_collected() -> None:
    """The collector misses no block: each fenced block with a language became a case."""
    blocks = [block for path in DOCUMENTS for block in read_blocks(path)]
    opened = sum(len(re.findall(r"^```", path.read_text(), re.MULTILINE)) for path in DOCUMENTS)
    assert len(blocks) * 2 == opened
    collected = sum(len(case.blocks) for case in CASES)
    assert collected == len([block for block in blocks if block.language])
    assert {case.kind for case in CASES} >= {"python", "pytest", "parse", "console", "toml"}
