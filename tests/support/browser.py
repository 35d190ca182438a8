"""Headless Chromium for the tests that look at a page as a reader would: the page is shown at a
given width inside an iframe (Chromium's window is at least 500 px wide; a 375 px iframe is what a
phone shows), a screenshot is kept, and the frame's script reports its measurements through the
document title, read back from the DOM Chromium dumps."""
from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--hide-scrollbars", "--virtual-time-budget=3000"]


def measure_in_frame(frame: str, page_html: str, width: int, folder: Path, screenshot: Path) -> dict:
    """Show `page_html` in `frame` (a template with {width} and {srcdoc}, whose script puts a JSON
    object in the document title) at `width` px; that object, with the screenshot's path."""
    name = screenshot.stem
    page = folder / f"{name}.html"
    page.write_text(frame.format(width=width, srcdoc=html.escape(page_html, quote=True)), encoding="utf-8")
    flags = [*FLAGS, f"--user-data-dir={folder / ('profile-' + name)}", f"--window-size={max(width, 500)},1400"]
    screenshot.parent.mkdir(exist_ok=True)
    subprocess.run([CHROMIUM, *flags, f"--screenshot={screenshot}", page.as_uri()], capture_output=True, timeout=60,
                   check=True)
    dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", page.as_uri()], capture_output=True, timeout=60, check=True,
                         text=True).stdout
    title = re.search(r"<title>(.*?)</title>", dom, re.S).group(1)
    return {**json.loads(html.unescape(title)), "screenshot": screenshot}
