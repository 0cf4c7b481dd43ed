"""A headless Chromium for tests, driven with the standard library only (no selenium).

`ensure_chromium()` finds a Chromium (`make test` installs Debian's beforehand where it can);
`dump_dom(path)` loads a page, lets its scripts run, and returns the DOM as the browser left it;
`with_checks(html)` is a copy of a page with a script that records what the browser saw.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

# Without the networking flags Chromium calls home on start; as root it refuses to run sandboxed.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--hide-scrollbars",
    "--window-size=1280,900",
]


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


def ensure_chromium() -> tuple[str | None, str]:
    """The browser's path, or None and why there is none. The tests install nothing: `make test`
    installs Debian's chromium beforehand where it can (as it installs Fashion-MNIST)."""
    found = find_chromium()
    if found:
        return found, ""
    return None, "no chromium on this machine (`make browser` installs Debian's chromium with apt-get)"


def dump_dom(chromium: str, page: Path, budget_ms: int = 5000, timeout_s: float = 60) -> str:
    """Open `page`, run its scripts (up to `budget_ms` of virtual time after load), return the DOM."""
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        command = [
            chromium,
            *FLAGS,
            f"--user-data-dir={profile}",
            f"--virtual-time-budget={budget_ms}",
            "--dump-dom",
            page.resolve().as_uri(),
        ]
        # Its own process group, so that a hung browser is ended with all its helper processes.
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
        )
        try:
            out, err = process.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise TimeoutError(f"chromium did not finish {page} in {timeout_s} s") from None
        if process.returncode != 0 or "<html" not in out:
            raise RuntimeError(f"chromium exited with {process.returncode}: {err.strip()[-1000:]}")
        return out


# Injected into a copy of the page under test (the report itself ships no script): on load it writes
# what the browser saw (script errors, image sizes, tables, fetched resources) into <body data-checks>.
# Errors are caught in the capture phase, so that failed images count too.
HEAD_SCRIPT = """<script>window.reportErrors = [];
addEventListener("error", (ev) => reportErrors.push(ev.message || "failed to load " +
  String((ev.target && (ev.target.src || ev.target.href)) || ev.type).slice(0, 60)), true);</script>"""
BODY_SCRIPT = """<script>addEventListener("load", () => {
  const box = (el) => { const r = el.getBoundingClientRect(); return [Math.round(r.width), Math.round(r.height)]; };
  const root = document.documentElement;
  document.body.dataset.checks = JSON.stringify({
    errors: reportErrors,
    images: [...document.images].map((img) => ({alt: img.alt, ok: img.complete && img.naturalWidth > 0,
                                                size: box(img)})),
    tables: [...document.querySelectorAll("table")].map((t) => ({cls: t.className, size: box(t)})),
    resources: performance.getEntriesByType("resource").map((r) => r.name.slice(0, 80)),
    overflow: root.scrollWidth > root.clientWidth,
  });
});</script>"""


def with_checks(page: str) -> str:
    """`page` with the checking script: first in <head> (so it sees every error), last in <body>."""
    if page.count("<head>") != 1 or page.count("</body>") != 1:
        raise ValueError("not a page with one <head> and one </body>")
    return page.replace("<head>", "<head>" + HEAD_SCRIPT, 1).replace("</body>", BODY_SCRIPT + "</body>", 1)
