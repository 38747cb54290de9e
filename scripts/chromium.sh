#!/usr/bin/env bash
# Run headless Chromium with ARGS (--dump-dom URL, --screenshot=FILE URL, ...) and the flags
# the docs browser check uses, in a fresh profile that is removed afterwards. Where no
# Chromium is installed, install Debian's `chromium` package first (as root: `make test` and
# the CI run as root; otherwise run `apt-get install -y chromium` yourself).
#
#   bash scripts/chromium.sh --dump-dom http://127.0.0.1:8000/index.html
#   bash scripts/chromium.sh --install-only
set -euo pipefail

find_chromium() {
    command -v chromium || command -v chromium-browser || true
}

install_chromium() {
    if [ "$(id -u)" != 0 ]; then
        echo "chromium is not installed: run 'apt-get install -y chromium' as root" >&2
        exit 1
    fi
    # Tests run in parallel: one of them installs, the others wait for it.
    exec 9>/tmp/flask-uow-chromium-install.lock
    flock 9
    [ -n "$(find_chromium)" ] && return
    echo "installing Debian's chromium package for the docs browser check" >&2
    export DEBIAN_FRONTEND=noninteractive
    # A fresh machine may have no package lists yet: update once, then install.
    if ! apt-get install -y --no-install-recommends chromium >&2; then
        apt-get update >&2
        apt-get install -y --no-install-recommends chromium >&2
    fi
    flock --unlock 9
}

browser=$(find_chromium)
if [ -z "$browser" ]; then
    install_chromium
    browser=$(find_chromium)
fi
if [ "${1:-}" = --install-only ]; then
    echo "$browser"
    exit 0
fi

profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
"$browser" --headless --no-sandbox --disable-gpu --disable-background-networking \
    --disable-component-update --no-first-run --disable-sync --user-data-dir="$profile" \
    "$@"
