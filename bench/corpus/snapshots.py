"""What the held-out sets' builders (heldout/build.py, heldout2/build.py) share: reading files out
of the local git snapshots the `fetch` tool leaves (/work/.mirror/owner+name/), a node's text, a
reference's paragraphs, and Readability's real-site test pages with their references."""
from __future__ import annotations

import gzip
import json
import subprocess
from pathlib import Path

from parsel import Selector


def git(repo: Path, *args: str) -> bytes:
    return subprocess.run(["git", "--git-dir", str(repo), *args], check=True, capture_output=True).stdout


def snapshot(mirrors: Path, repository: str) -> Path:
    folder = mirrors / repository.replace("/", "+") / "repo"
    return folder / ".git" if (folder / ".git").is_dir() else folder


def text(node: Selector) -> str:
    return " ".join(" ".join(node.xpath(".//text()").getall()).split())


def paragraphs(html: str) -> list[str]:
    sel = Selector(text=html)
    found = [text(p) for p in sel.css("p, li, h2, h3, blockquote, pre")]
    return [p for p in found if len(p) >= 20]


def readability_articles(mirrors: Path, pages: Path, names: list[str]) -> list[dict]:
    """mozilla/readability's test pages `names`: source.html gzipped into `pages`, and a manifest
    entry each with its first and last reference paragraph, title and date."""
    manifest = []
    repo = snapshot(mirrors, "mozilla/readability")
    commit = git(repo, "rev-parse", "HEAD").decode().strip()
    for name in names:
        base = f"test/test-pages/{name}"
        raw = git(repo, "show", f"HEAD:{base}/source.html")
        expected = paragraphs(git(repo, "show", f"HEAD:{base}/expected.html").decode("utf-8", "replace"))
        meta = json.loads(git(repo, "show", f"HEAD:{base}/expected-metadata.json"))
        (pages / f"readability-{name}.html.gz").write_bytes(gzip.compress(raw, mtime=0))
        manifest.append({"file": f"pages/readability-{name}.html.gz", "repository": "mozilla/readability",
                         "commit": commit, "path": f"{base}/source.html", "licence": "Apache-2.0 (repository); "
                         "page content: its site's", "url": "http://fakehost/test/page.html",
                         "reference": f"{base}/expected.html, {base}/expected-metadata.json",
                         "first": expected[0] if expected else None, "last": expected[-1] if expected else None,
                         "title": meta.get("title"), "published": (meta.get("publishedTime") or "")[:10] or None})
    return manifest
