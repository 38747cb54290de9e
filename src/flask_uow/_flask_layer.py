"""The framework layers flask-uow registers for Flask and Quart (``flask_uow.frameworks``).

The core finds them through ``flask_uow._frameworks``. Importing this module imports no
framework: a layer imports its framework's integration when it is handed an app, and
reads a request only when its framework is already imported.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._database import Database
    from ._flask import Framework


class WebLayer:
    """The layer of one framework built on Flask: it hands apps to ``_flask.register``."""

    def __init__(self, package: str, load: Callable[[], Framework]) -> None:
        self.package = package
        self._load = load
        self._framework: Framework | None = None

    def framework(self) -> Framework:
        """The framework's record, importing its integration (and the framework) once."""
        framework = self._framework
        if framework is None:
            framework = self._framework = self._load()
        return framework

    def init_app(self, db: Database, app: Any) -> None:
        from ._flask import register

        register(db, app, self.framework())

    def request_args(self) -> Mapping[str, str] | None:
        if sys.modules.get(self.package) is None:  # the app never imported it: no request
            return None
        context = self.framework().request_context.get(None)
        if context is None:
            return None
        args: Mapping[str, str] = context.request.args
        return args

    def not_found(self, description: str | None) -> Exception:
        from werkzeug.exceptions import NotFound

        return NotFound(description=description)


def _flask() -> Framework:
    from ._flask import FLASK

    return FLASK


def _quart() -> Framework:
    from ._quart import QUART

    return QUART


FLASK = WebLayer("flask", _flask)
QUART = WebLayer("quart", _quart)
