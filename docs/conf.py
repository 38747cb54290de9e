"""Sphinx configuration of the flask-uow documentation site (``make docs``).

The pages are the Markdown files of this folder, read by MyST; the API reference (docs/api/)
is made by autodoc from the docstrings, in reST pages because autodoc writes reST. ``make
docs`` builds with warnings as errors and ``nitpicky`` on: every cross-reference resolves.
"""

from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from docutils import nodes
from sphinx.addnodes import pending_xref
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.ext import intersphinx

import flask_uow

project = "flask-uow"
author = "flask-uow developers"
copyright = "flask-uow developers"  # noqa: A001 - Sphinx's name for it
release = flask_uow.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.intersphinx",
    "pallets_sphinx_themes",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}  # api/ is reST, for autodoc
root_doc = "index"
exclude_patterns = ["_build", "_inventories"]
nitpicky = True
# Third-party names that appear in signatures and cannot resolve, because the package's
# source distribution on PyPI carries no docs to build an inventory from (see "Cross-links"
# below).
nitpick_ignore = [
    # Flask-DebugToolbar's panel base class, the base of flask_uow.debugtoolbar.UnitsPanel.
    ("py:class", "flask_debugtoolbar.panels.DebugPanel"),
    # Celery's Task, the base of flask_uow.celery.UnitTask: no inventory of Celery's docs is
    # committed (its source release builds them only with its own theme and extensions).
    ("py:class", "celery.app.task.Task"),
]

# -- MyST: the Markdown pages --------------------------------------------------------------
# Directives are written in colon fences (:::{toctree}), never in backtick fences: every
# backtick block of docs/*.md runs as a test (tests/test_docs.py).
myst_enable_extensions = ["colon_fence"]
myst_heading_anchors = 3  # guide.md#timeouts and the like link to headings

# -- autodoc: the API reference ------------------------------------------------------------
autodoc_default_options = {"members": True, "member-order": "bysource", "show-inheritance": True}
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"
autodoc_preserve_defaults = True
autodoc_inherit_docstrings = False  # a UnitSession method says what it does in a unit

# The public modules, each one section of api/modules.rst. A new public module of flask_uow
# is one more line here (tests/test_docs_site.py fails until it is).
PUBLIC_MODULES = [
    "flask_uow.testing",
    "flask_uow.pytest_plugin",
    "flask_uow.pagination",
    "flask_uow.otel",
    "flask_uow.debugtoolbar",
    "flask_uow.outbox",
    "flask_uow.outbox.testing",
    "flask_uow.outbox.otel",
    "flask_uow.celery",
]
# Names of a module's __all__ that are another project's and have no docs here (none today;
# tests/test_docs_site.py reports each one listed).
NOT_DOCUMENTED: dict[str, list[str]] = {}

# -- Cross-links to Python, SQLAlchemy and Flask ------------------------------------------
# The inventories are committed in docs/_inventories/ and read from there, never from the
# network: the docs build offline and the same everywhere. They are the objects.inv files of
# each project's own documentation, made by scripts/docs_inventories.sh (Python's from
# Debian's python3.11-doc, SQLAlchemy's and Flask's built from their source distributions
# on PyPI); run it again to move to newer releases.
INVENTORIES = Path(__file__).parent / "_inventories"
intersphinx_mapping = {
    "python": ("https://docs.python.org/3/", str(INVENTORIES / "python.inv")),
    "sqlalchemy": ("https://docs.sqlalchemy.org/en/20/", str(INVENTORIES / "sqlalchemy.inv")),
    "flask": ("https://flask.palletsprojects.com/en/stable/", str(INVENTORIES / "flask.inv")),
}

# -- HTML ------------------------------------------------------------------------------------
html_theme = "flask"
html_title = f"flask-uow {release}"
html_static_path: list[str] = []
html_sidebars = {
    "index": ["searchbox.html", "localtoc.html"],
    "**": ["searchbox.html", "localtoc.html", "relations.html"],
}
html_show_sourcelink = False


def public_alias(target: str) -> list[str]:
    """Where a name documented under a package that re-exports it may be found.

    Type hints name classes by their defining module (``flask_uow._unit.UnitOfWork``,
    ``sqlalchemy.orm.session.Session``); the docs list them where users import them from
    (``flask_uow.UnitOfWork``, ``sqlalchemy.orm.Session``). The candidates are the name
    under each shorter module path, longest first.
    """
    module, _, name = target.rpartition(".")
    parts = module.split(".")
    return [".".join([*parts[:end], name]) for end in range(len(parts) - 1, 0, -1)]


def type_checking_imports() -> dict[str, str]:
    """Names that flask_uow's modules import only for type checking, to their full names.

    Annotations naming them (``app: Flask``, ``Connection``) stay strings that autodoc
    cannot evaluate, so they reach the docs as bare names.
    """
    names: dict[str, str] = {}
    package = Path(flask_uow.__file__).parent
    for path in sorted(package.rglob("*.py")):
        here = ".".join(["flask_uow", *path.parent.relative_to(package).parts])
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
                for statement in node.body:
                    if isinstance(statement, ast.ImportFrom):
                        module = statement.module or ""
                        if statement.level:  # from ._database import Database
                            module = ".".join([here, *module.split(".")]).rstrip(".")
                        for alias in statement.names:
                            names.setdefault(alias.asname or alias.name, f"{module}.{alias.name}")
    return names


TYPE_CHECKING_NAMES = type_checking_imports()


def is_type_variable(target: str) -> bool:
    """Whether ``target`` names a TypeVar or ParamSpec of flask_uow (they have no page)."""
    module, _, name = target.rpartition(".")
    if module and module != "flask_uow" and not module.startswith("flask_uow."):
        return False
    modules = (
        [sys.modules[module]]
        if module in sys.modules
        else [value for key, value in list(sys.modules.items()) if key.startswith("flask_uow")]
    )
    return any(isinstance(getattr(m, name, None), TypeVar | ParamSpec) for m in modules)


def is_private(target: str) -> bool:
    """Whether ``target`` is a flask_uow class with no page: one of a private module that
    ``flask_uow`` does not export, or one a public module leaves out of its ``__all__``."""
    module, _, name = target.rpartition(".")
    if module != "flask_uow" and not module.startswith("flask_uow."):
        return False
    if any(part.startswith("_") for part in module.split(".")):
        return name not in flask_uow.__all__
    found = sys.modules.get(module)
    return found is not None and name not in getattr(found, "__all__", [name])


def resolve_through_alias(
    app: Sphinx, env: BuildEnvironment, node: pending_xref, contnode: nodes.TextElement
) -> nodes.Node | None:
    """Resolve a Python reference that failed under the name a type hint gave it.

    Tries the name where users import it from (public_alias), and the full name of a bare
    name imported for type checking only. Type variables and private helper classes that
    a signature mentions are shown as plain text: they have no page.
    """
    if node.get("refdomain") != "py" or not node.get("reftarget"):
        return None
    target = node["reftarget"].lstrip("~")
    target = TYPE_CHECKING_NAMES.get(target, target)
    if is_type_variable(target):
        return contnode
    domain = env.domains["py"]
    for candidate in [target, *public_alias(target)]:
        retry = node.deepcopy()
        retry["reftarget"] = candidate
        found = domain.resolve_xref(
            env, node.get("refdoc", ""), app.builder, node["reftype"], candidate, retry, contnode
        )
        if found is None:
            found = intersphinx.missing_reference(app, env, retry, contnode)
        if found is not None:
            return found
    return contnode if is_private(target) else None


def add_public_modules(app: Sphinx, docname: str, source: list[str]) -> None:
    """Append one ``automodule`` section per entry of PUBLIC_MODULES to api/modules.rst.

    A name that ``flask_uow`` exports too (``Pagination``) is documented once, on the API
    reference's main page, where users import it from.
    """
    if docname != "api/modules":
        return
    for name in PUBLIC_MODULES:
        module = importlib.import_module(name)
        excluded = [
            member
            for member in getattr(module, "__all__", [])
            if member in flask_uow.__all__ and getattr(flask_uow, member) is getattr(module, member)
        ] + NOT_DOCUMENTED.get(name, [])
        source[0] += f"\n``{name}``\n{'-' * (len(name) + 4)}\n\n.. automodule:: {name}\n"
        if excluded:
            source[0] += f"   :exclude-members: {', '.join(excluded)}\n"


def public_bases(app: Sphinx, name: str, obj: type, options: Any, bases: list[type]) -> None:
    """Show a class's bases that tell the reader something: not ``object``, not private ones."""
    bases[:] = [
        base
        for base in bases
        if base is not object and not is_private(f"{base.__module__}.{base.__qualname__}")
    ]


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("autodoc-process-bases", public_bases)
    app.connect("missing-reference", resolve_through_alias, priority=900)  # after intersphinx
    app.connect("source-read", add_public_modules)
    return {"parallel_read_safe": True}
