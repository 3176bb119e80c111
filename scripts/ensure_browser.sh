#!/usr/bin/env bash
# The browser test (tests/test_browser.py) drives Debian's chromium through Playwright. Install the distribution's
# chromium when it is missing and we may (root with apt-get); otherwise say what to install. Never downloads a
# Playwright browser build.
set -uo pipefail
if command -v chromium >/dev/null 2>&1 || [ -n "${LTH_CHROMIUM:-}" ]; then
    exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "ensure_browser: installing Debian's chromium for the browser test"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
        || echo "ensure_browser: could not install chromium; tests/test_browser.py will fail" >&2
else
    echo "ensure_browser: no chromium found; install your distribution's chromium (or set LTH_CHROMIUM to a" \
         "chromium binary) for tests/test_browser.py" >&2
fi
exit 0
