"""Headless Chromium from Debian's ``chromium`` package, driven from the command line.

``make test`` installs the package when ``/usr/bin/chromium`` is absent; where that is impossible
the browser tests are skipped with a loud reason (never silently passed).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import warnings
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync")

# Appended to a copy of the page (the report itself has no script): once everything has loaded,
# write each image's src, completion and natural width into the DOM for --dump-dom to show.
IMAGE_CHECK = """<script>window.addEventListener("load", function () {
  var lines = Array.prototype.map.call(document.images, function (image) {
    return image.getAttribute("src") + " " + image.complete + " " + image.naturalWidth; });
  var out = document.createElement("pre"); out.id = "image-check";
  out.textContent = "IMAGES\\n" + lines.join("\\n"); document.body.appendChild(out); });</script>"""


def chromium() -> str:
    """The browser's path; skips the test (loudly) when it is not installed."""
    path = CHROMIUM if Path(CHROMIUM).is_file() else shutil.which("chromium")
    if path is None:
        message = ("HEADLESS CHROMIUM IS NOT INSTALLED: the browser test of the report is SKIPPED. "
                   "`make test` installs Debian's chromium with apt-get; that failed here.")
        warnings.warn(message, stacklevel=2)
        pytest.skip(message)
    return path


def _run(arguments: list[str], profile: Path) -> subprocess.CompletedProcess:
    return subprocess.run([chromium(), *FLAGS, f"--user-data-dir={profile}", *arguments],
                          capture_output=True, text=True, timeout=120, check=False)


def image_states(index_html: Path, profile: Path) -> list[tuple[str, bool, int]]:
    """``(src, complete, naturalWidth)`` of every image of the page, as Chromium loaded it."""
    check = index_html.with_name("image-check.html")
    check.write_text(index_html.read_text().replace("</body>", IMAGE_CHECK + "</body>"))
    result = _run(["--virtual-time-budget=10000", "--dump-dom", check.resolve().as_uri()], profile)
    match = re.search(r'<pre id="image-check">IMAGES\n?(.*?)</pre>', result.stdout, re.S)
    assert match, f"chromium printed no image check (exit {result.returncode}): {result.stderr[-400:]}"
    check.unlink()
    states = []
    for line in match.group(1).strip().splitlines():
        src, complete, width = line.rsplit(" ", 2)
        states.append((src, complete == "true", int(width)))
    return states


def screenshot(index_html: Path, png: Path, profile: Path, width: int = 1280,
               height: int = 2400) -> None:
    """A screenshot of the page into ``png``."""
    result = _run([f"--screenshot={png}", f"--window-size={width},{height}",
                   "--hide-scrollbars", index_html.resolve().as_uri()], profile)
    assert png.is_file(), f"no screenshot (exit {result.returncode}): {result.stderr[-400:]}"
