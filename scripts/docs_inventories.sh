#!/usr/bin/env bash
# Remake docs/_inventories/*.inv, the objects.inv files of Python's, SQLAlchemy's and Flask's
# own documentation. docs/conf.py points intersphinx at these files instead of at the
# projects' sites, so `make docs` builds offline and the same on every machine; run this
# script (it needs Debian's apt and PyPI) to link to newer releases, then commit the files.
#
#   bash scripts/docs_inventories.sh                    # the releases below
#   SQLALCHEMY=2.0.60 FLASK=3.1.4 bash scripts/docs_inventories.sh
set -euo pipefail
SQLALCHEMY=${SQLALCHEMY:-2.0.58}
FLASK=${FLASK:-3.1.3}
PYTHON_DOC=${PYTHON_DOC:-python3.11-doc}

out=$(cd "$(dirname "$0")/../docs/_inventories" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"

# Python: Debian's pythonX.Y-doc package ships the HTML docs with their inventory.
apt-get download "$PYTHON_DOC"
dpkg-deb -x "$PYTHON_DOC"_*.deb python-doc
cp python-doc/usr/share/doc/python3.*/html/objects.inv "$out/python.inv"

# SQLAlchemy and Flask: their source distributions on PyPI carry the docs' sources; build
# them with the Sphinx extensions they name, and keep the inventory.
python3 -m venv venv
venv/bin/pip install --quiet "sphinx<9" zzzeeksphinx sphinx-paramlinks changelog \
    sphinx-copybutton pallets-sphinx-themes sphinxcontrib-log-cabinet sphinx-tabs \
    "sqlalchemy==$SQLALCHEMY" "flask==$FLASK"
venv/bin/pip download --quiet --no-deps --no-binary :all: \
    "sqlalchemy==$SQLALCHEMY" "flask==$FLASK"
tar xzf "sqlalchemy-$SQLALCHEMY.tar.gz"
tar xzf "flask-$FLASK.tar.gz"
# SQLAlchemy's conf.py asks for zzzeeksphinx 1.6.4, a release only on its Git host; PyPI's
# 1.6.2 builds the same inventory.
sed -i 's/^needs_extensions = .*/needs_extensions = {}/' "sqlalchemy-$SQLALCHEMY/doc/build/conf.py"
venv/bin/sphinx-build -q -b html "sqlalchemy-$SQLALCHEMY/doc/build" sqlalchemy-html
venv/bin/sphinx-build -q -b html "flask-$FLASK/docs" flask-html
cp sqlalchemy-html/objects.inv "$out/sqlalchemy.inv"
cp flask-html/objects.inv "$out/flask.inv"
ls -l "$out"
