"""The documentation site: every public name documented, and the pages work in a browser.

The site is built here as ``make docs`` builds it (warnings are errors, nitpicky), into a
folder of the test session. A real headless Chromium (Debian's, installed by
scripts/chromium.sh where missing) then loads the landing page, the API reference, a guide
page and the search page from a local HTTP server, runs their JavaScript, and the tests read
the DOM it rendered.
"""

from __future__ import annotations

import enum
import functools
import http.server
import importlib
import inspect
import os
import pkgutil
import shutil
import subprocess
import sys
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from html.parser import HTMLParser
from pathlib import Path
from types import ModuleType
from urllib.parse import unquote, urljoin, urlsplit

import pytest

import flask_uow
from tests.build_once import build_once

ROOT = Path(__file__).resolve().parent.parent
# The same build as `make docs`, into a folder of its own.
SPHINX_BUILD = ["-m", "sphinx", "-W", "--keep-going", "-n", "-E", "-q", "-b", "html"]


# -- what is public --------------------------------------------------------------------------


def public_modules() -> dict[str, ModuleType]:
    """``flask_uow`` and each of its modules and packages whose path has no ``_`` part."""
    modules = {"flask_uow": flask_uow}
    for info in pkgutil.walk_packages(flask_uow.__path__, "flask_uow."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            modules[info.name] = importlib.import_module(info.name)
    return modules


def public_names(module: ModuleType) -> list[str]:
    """The module's ``__all__``, or else the functions and classes it defines."""
    if hasattr(module, "__all__"):
        return list(module.__all__)
    return [
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and getattr(value, "__module__", None) == module.__name__
    ]


def public_members(cls: type) -> list[str]:
    """Methods and properties a class defines itself (enum members and dunders left out).

    A Protocol (``AsyncUnit``) only tells type checkers what another class offers: its
    members are that class's, and documented there.
    """
    if getattr(cls, "_is_protocol", False):
        return []
    members = []
    for name, value in vars(cls).items():
        if name.startswith("_") or (isinstance(cls, enum.EnumType) and name in cls.__members__):
            continue
        if isinstance(value, property | staticmethod | classmethod) or inspect.isfunction(value):
            members.append(name)
    return members


def own_docstring(value: object) -> str:
    """The docstring written on ``value`` itself, not one inherited from a base class."""
    if isinstance(value, property):
        value = value.fget
    if isinstance(value, staticmethod | classmethod):
        value = value.__func__
    return (getattr(value, "__doc__", None) or "").strip()


@dataclass
class PublicName:
    """A documented name: ``flask_uow.otel.instrument``, ``flask_uow.Database.session``."""

    qualified: str
    value: object
    also: list[str] = field(default_factory=list)  # other names it may be documented under


def every_public_name() -> Iterator[PublicName]:
    for module_name, module in public_modules().items():
        for name in public_names(module):
            value = getattr(module, name)
            exported = name in flask_uow.__all__ and getattr(flask_uow, name) is value
            also = [f"flask_uow.{name}"] if exported and module is not flask_uow else []
            yield PublicName(f"{module_name}.{name}", value, also)
            if inspect.isclass(value):
                for member in public_members(value):
                    yield PublicName(
                        f"{module_name}.{name}.{member}",
                        vars(value)[member],
                        [f"{other}.{member}" for other in also],
                    )


def test_every_public_name_has_a_docstring_of_its_own() -> None:
    undocumented = sorted(
        {name.qualified for name in every_public_name() if not own_docstring(name.value)}
    )
    assert not undocumented, (
        "these public names have no docstring (say what happens to the transaction):\n"
        + "\n".join(undocumented)
    )


# -- the built site --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The HTML site, built from docs/ as ``make docs`` builds it."""

    def build(html: Path) -> None:
        # Not under coverage (make pytest measures subprocesses): tracing Sphinx is slow.
        environ = {key: value for key, value in os.environ.items() if "COVERAGE" not in key}
        result = subprocess.run(
            [sys.executable, *SPHINX_BUILD, str(ROOT / "docs"), str(html)],
            capture_output=True,
            text=True,
            env=environ,
        )
        assert result.returncode == 0, f"the docs do not build:\n{result.stderr}"

    return build_once(tmp_path_factory, "docs-html", build)


def documented_objects(site: Path) -> dict[str, str]:
    """The Python objects of the site's ``objects.inv``: full name to role."""
    *header, compressed = site.joinpath("objects.inv").read_bytes().split(b"\n", 4)
    assert header[0] == b"# Sphinx inventory version 2"
    objects = {}
    for line in zlib.decompress(compressed).decode().splitlines():
        name, role, _ = line.split(" ", 2)
        if role.startswith("py:"):
            objects[name] = role
    return objects


def test_every_public_module_has_a_section_in_the_api_reference(site: Path) -> None:
    objects = documented_objects(site)
    missing = [name for name in public_modules() if objects.get(name) != "py:module"]
    assert not missing, f"add {missing} to PUBLIC_MODULES in docs/conf.py"


def test_every_public_name_has_an_entry_in_the_api_reference(site: Path) -> None:
    """Names without a docstring are the test above's: autodoc leaves them out."""
    objects = documented_objects(site)
    missing = sorted(
        name.qualified
        for name in every_public_name()
        if own_docstring(name.value)
        and not any(candidate in objects for candidate in [name.qualified, *name.also])
    )
    assert not missing, "these public names are not in the API reference:\n" + "\n".join(missing)


# -- in a browser ----------------------------------------------------------------------------


class Page(HTMLParser):
    """What a test reads from a rendered DOM: title, headings, ids, links, search results."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.title = ""
        self.h1 = ""
        self.ids: set[str] = set()
        self.links: list[str] = []
        self.search_results: list[str] = []
        self._text_of: str | None = None
        self._in_search = False
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if found.get("id"):
            self.ids.add(str(found["id"]))
        if tag == "ul" and "search" in (found.get("class") or "").split():
            self._in_search = True
        if tag == "a" and found.get("href"):
            self.links.append(str(found["href"]))
            if self._in_search:
                self.search_results.append(str(found["href"]))
        if tag in ("title", "h1") and not getattr(self, tag):
            self._text_of = tag

    def handle_endtag(self, tag: str) -> None:
        if tag == "ul":
            self._in_search = False
        if tag == self._text_of:
            self._text_of = None

    def handle_data(self, data: str) -> None:
        if self._text_of:
            setattr(self, self._text_of, getattr(self, self._text_of) + data)


@pytest.fixture(scope="session")
def browser() -> str:
    """Chromium's path, installed first where missing (apt-get may take minutes).

    CI (and any root user) installs it; elsewhere a machine without Chromium skips the
    browser checks and says why, as a machine without a database server skips that backend.
    """
    if not os.environ.get("CI") and os.geteuid() != 0 and shutil.which("chromium") is None:
        pytest.skip("browser checks: Chromium is not installed (apt-get install chromium)")
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "chromium.sh"), "--install-only"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.fixture(scope="session")
def server(site: Path, browser: str) -> Iterator[str]:
    """The built site on a local HTTP server: the URL of its root."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=site))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


def chromium(*args: str) -> bytes:
    """Run headless Chromium through scripts/chromium.sh (which installs it where missing)."""
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "chromium.sh"), *args],
        capture_output=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result.stdout


def render(url: str) -> Page:
    """The DOM of ``url`` once the browser has loaded it and run its scripts."""
    return Page(chromium("--virtual-time-budget=5000", "--dump-dom", url).decode())


def test_the_landing_page_renders_with_its_contents(server: str) -> None:
    page = render(server + "index.html")
    assert page.title.startswith(f"flask-uow — flask-uow {flask_uow.__version__}")
    assert page.h1.strip("¶") == "flask-uow"
    for target in ("quickstart.html", "guide.html", "api/index.html", "changes.html"):
        assert target in page.links, f"the landing page does not link to {target}"


def test_the_api_reference_renders_an_entry_for_each_exported_name(server: str) -> None:
    page = render(server + "api/index.html")
    assert page.title.startswith("API reference")
    missing = [name for name in flask_uow.__all__ if f"flask_uow.{name}" not in page.ids]
    assert not missing


def test_a_guide_page_renders(server: str) -> None:
    page = render(server + "guide.html")
    assert page.h1.strip("¶") == "What happens to the transaction"
    assert "nesting-propagation" in page.ids  # the heading anchors other pages link to


def test_the_search_page_finds_a_method_in_the_api_reference(server: str) -> None:
    page = render(server + "search.html?q=transactional")
    assert "api/index.html#flask_uow.Database.transactional" in page.search_results


@functools.cache
def anchors(file: Path) -> set[str]:
    return Page(file.read_text()).ids


def test_no_internal_link_of_the_rendered_pages_is_broken(server: str, site: Path) -> None:
    broken = []
    checked = 0
    for path in ("index.html", "api/index.html", "api/modules.html", "guide.html"):
        page_url = server + path
        for link in render(page_url).links:
            target = urljoin(page_url, link)
            if not target.startswith(server):
                continue  # another site: Python's, SQLAlchemy's or Flask's docs
            checked += 1
            parts = urlsplit(target)
            file = site / unquote(parts.path[len(urlsplit(server).path) :])
            if file.is_dir():
                file = file / "index.html"
            if not file.is_file():
                broken.append(f"{path}: {link} (no such page)")
            elif parts.fragment and file.suffix == ".html":
                if unquote(parts.fragment) not in anchors(file):
                    broken.append(f"{path}: {link} (no such anchor)")
    assert not broken, "\n".join(broken)
    assert checked > 200  # the reference alone links each entry to itself


def test_the_landing_page_draws_in_a_browser(server: str, tmp_path: Path) -> None:
    screenshot = tmp_path / "landing.png"
    chromium("--window-size=1280,900", f"--screenshot={screenshot}", server + "index.html")
    png = screenshot.read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert int.from_bytes(png[16:20]) == 1280 and int.from_bytes(png[20:24]) == 900
    # A page that failed to draw is one colour and compresses to a few kilobytes; the
    # landing page's text and code come to well over 50 kB.
    assert len(png) > 50_000
