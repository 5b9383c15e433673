"""Headless Chromium for the page tests: open a file, run a probe, read what
a person would see.

Debian's ``chromium`` (``apt-get install chromium``); CI installs it. Without
it the browser tests skip, unless ``AETHER_AUDIT_REQUIRE_BROWSER`` is set.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from _support import required, skip_reason

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
browser = pytest.mark.skipif(
    CHROMIUM is None and not required("AETHER_AUDIT_REQUIRE_BROWSER"),
    reason=skip_reason("needs Debian's chromium (apt-get install chromium)", "AETHER_AUDIT_REQUIRE_BROWSER"),
)
LAPTOP = (1366, 768)
# Half a laptop screen: a browser beside an editor.
SPLIT_SCREEN = (800, 900)

# Opens every history, then measures the layout: does the page scroll
# sideways, and where does the text of each table cell wrap. A line break
# between two letters or digits is a word broken in two (``o|rder``,
# ``OrderShippe|d``); after ``.``, ``-``, ``_``, a space or other punctuation
# it is a break a reader expects. Payload JSON cells (td.json) are exempt:
# compact JSON has no spaces and must wrap somewhere. Each character's box
# comes from a Range over it; a line starts where a box's top moves down.
LAYOUT_PROBE = r"""<script>
(function () {
  document.querySelectorAll("details").forEach(function (d) { d.open = true; });
  var out = {overflow: document.documentElement.scrollWidth - window.innerWidth,
             midWord: [], codesOnTwoLines: [], actorLines: {}, idLines: 0, wideBoxes: 0, cells: 0};
  function chars(cell) {
    // A space that ends a line has no box: a break after it joins the two
    // characters around it, so each character notes whether one came before.
    var walker = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT), seen = [], space = false;
    for (var node = walker.nextNode(); node; node = walker.nextNode()) {
      for (var i = 0; i < node.data.length; i++) {
        var range = document.createRange();
        range.setStart(node, i); range.setEnd(node, i + 1);
        var box = range.getClientRects()[0];
        if (/\s/.test(node.data[i])) { space = true; continue; }
        if (box && box.width) { seen.push({c: node.data[i], top: box.top, afterSpace: space}); space = false; }
      }
    }
    return seen;
  }
  function lines(seen) {
    var text = "", count = seen.length ? 1 : 0;
    for (var i = 0; i < seen.length; i++) {
      if (i && seen[i].top > seen[i - 1].top + 2) { text += "|"; count += 1; }
      else if (i && seen[i].afterSpace) text += " ";
      text += seen[i].c;
    }
    return {text: text, count: count};
  }
  document.querySelectorAll("table td").forEach(function (cell) {
    if (cell.classList.contains("json")) return;
    var seen = chars(cell);
    out.cells += 1;
    for (var i = 1; i < seen.length; i++) {
      if (seen[i].top > seen[i - 1].top + 2 && !seen[i].afterSpace && /[A-Za-z0-9]/.test(seen[i - 1].c) && /[A-Za-z0-9]/.test(seen[i].c)) {
        out.midWord.push(lines(seen).text);
        break;
      }
    }
    var shape = lines(seen);
    if (cell.classList.contains("code") && shape.count > 1) out.codesOnTwoLines.push(shape.text);
    if (cell.classList.contains("actor")) out.actorLines[cell.textContent] = shape.count;
    if (cell.classList.contains("id")) out.idLines = Math.max(out.idLines, shape.count);
  });
  // A table wider than the page must scroll inside its own box, not move the page.
  document.querySelectorAll(".scroll").forEach(function (box) {
    if (box.getBoundingClientRect().right > window.innerWidth + 1) out.wideBoxes += 1;
  });
  var pre = document.createElement("pre"); pre.id = "probe"; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();
</script>"""


def open_in_chromium(path: Path, *, size: tuple[int, int] = LAPTOP, fragment: str = "") -> tuple[str, Any, list[str]]:
    """The DOM after the page's scripts ran, the probe's findings (the JSON
    the page's probe script wrote into ``<pre id="probe">``), and the console
    messages (any is a defect)."""
    assert CHROMIUM, "AETHER_AUDIT_REQUIRE_BROWSER is set but chromium is not installed"
    result = subprocess.run(
        [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
         f"--window-size={size[0]},{size[1]}", "--virtual-time-budget=5000", "--enable-logging=stderr", "--v=0",
         f"--user-data-dir={path.parent / 'chromium-profile'}", "--dump-dom", path.as_uri() + fragment],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    probe = re.search(r'<pre id="probe">(.*?)</pre>', result.stdout, re.DOTALL)
    assert probe, result.stdout[-2000:]
    console = [line for line in result.stderr.splitlines() if ":CONSOLE" in line]
    return result.stdout, json.loads(html.unescape(probe.group(1))), console


def with_probe(page: str, probe: str) -> str:
    return page.replace("</body>", probe + "</body>")


def screenshot(path: Path, shot: Path, *, size: tuple[int, int] = LAPTOP) -> bytes:
    """A PNG of the page as it opens at ``size``."""
    assert CHROMIUM, "AETHER_AUDIT_REQUIRE_BROWSER is set but chromium is not installed"
    subprocess.run([CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--window-size={size[0]},{size[1]}", f"--user-data-dir={shot.parent / 'profile'}",
                    f"--screenshot={shot}", path.as_uri()], capture_output=True, timeout=120, check=True)
    return shot.read_bytes()
