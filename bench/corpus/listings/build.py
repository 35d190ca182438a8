"""Rebuild bench/corpus/listings/ from local snapshots (bare git dirs) of its source repositories.

    python bench/corpus/listings/build.py /work/.mirror   # the folder holding owner+name/ snapshots

Writes pages/*.html.gz and manifest.json. Each page's expected posts are the links of `expected_by`,
a CSS selector written for that page's own theme after reading its HTML (the listing's own entries,
in page order, made absolute against `url`); `also_posts` are posts the page shows elsewhere
(a sidebar's recent posts, a carousel), which count neither as found nor as false. Nothing here
is imported by postwatch.
"""
from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path
from urllib.parse import urljoin

from parsel import Selector

HERE = Path(__file__).parent
HEXO = "no licence file in the repository; the built pages of the author's own blog"

# (file, repository, path, page URL, kind of page, licence, expected_by, also_by)
PAGES = [
    ("adactio-links.html", "aaronpk/XRay", "tests/data/feed.example.com/adactio-links", "https://adactio.com/links",
     "link-blog: h-entry, headline off-site, permalink on-site in the entry's footer", "MIT",
     "article.h-entry a.u-url", None),
    ("waterpigs-home.html", "aaronpk/XRay", "tests/data/feed.example.com/waterpigs", "https://waterpigs.co.uk/",
     "h-feed home page: untitled notes and an article, replies to off-site posts", "MIT",
     ".h-entry .u-url", None),
    ("hexo-matery-home.html", "HCLonely/matery.hclonely.com", "index.html", "https://matery.hclonely.com/",
     "cards in a grid inside one <article> wrapper; a carousel and a recommended post above", HEXO,
     "main div.article div.card > a", "a[href^='/posts/']"),
    ("hexo-nexmoe-home.html", "HCLonely/nexmoe.hclonely.com", "index.html", "https://nexmoe.hclonely.com/",
     "cards whose cover image link holds the title; excerpts in <article> without links", HEXO,
     "section.nexmoe-posts div.nexmoe-post > a", "a[href^='/posts/']"),
    ("hexo-volantis-home.html", "HCLonely/volantis.hclonely.com", "index.html", "https://volantis.hclonely.com/",
     "<article> per post with pinned posts", HEXO, "section.post-list h2.title a", "a[href^='/posts/']"),
    ("hexo-yilia-home.html", "HCLonely/yilia.hclonely.com", "index.html", "https://yilia.hclonely.com/",
     "<article> per post, 'more' links", HEXO, "article h1 a", "a[href^='/posts/']"),
    ("hexo-next-home.html", "HCLonely/next.hclonely.com", "index.html", "https://next.hclonely.com/",
     "<article> per post (NexT theme)", HEXO, "main a.post-title-link", "a[href^='/posts/']"),
    ("hexo-icarus-home.html", "HCLonely/icarus.hclonely.com", "index.html", "https://icarus.hclonely.com/",
     "<article> cards, sidebar widgets", HEXO, "div.column-main a.link-muted[href^='/posts/'], div.column-main h1 a",
     "a[href^='/posts/']"),
    ("hexo-icarus-archives.html", "HCLonely/icarus.hclonely.com", "archives/index.html",
     "https://icarus.hclonely.com/archives/", "archive timeline plus a recent-posts widget", HEXO,
     "div.timeline a[href^='/posts/']", "a[href^='/posts/']"),
    ("hexo-next-archives.html", "HCLonely/next.hclonely.com", "archives/index.html",
     "https://next.hclonely.com/archives/", "archive list of dated title links", HEXO,
     "div.posts-collapse article a", "a[href^='/posts/']"),
    ("hexo-matery-archives.html", "HCLonely/matery.hclonely.com", "archives/index.html",
     "https://matery.hclonely.com/archives/", "archive timeline of cards", HEXO,
     ".cd-timeline-content a[href^='/posts/']", "a[href^='/posts/']"),
]


def git(repo: Path, *args: str) -> bytes:
    return subprocess.run(["git", "--git-dir", str(repo), *args], check=True, capture_output=True).stdout


def snapshot(mirrors: Path, repository: str) -> Path:
    base = mirrors / repository.replace("/", "+") / "repo"
    return base / ".git" if (base / ".git").is_dir() else base


def links(html: str, url: str, query: str | None) -> list[str]:
    found: list[str] = []
    if not query:
        return found
    for href in Selector(text=html).css(query).xpath("@href").getall():
        absolute = urljoin(url, href).split("#", 1)[0]
        if absolute.startswith(url.split("/", 3)[0] + "//" + url.split("/", 3)[2]) and absolute not in found:
            found.append(absolute)
    return found


def main(mirrors: str) -> None:
    pages = HERE / "pages"
    pages.mkdir(exist_ok=True)
    manifest = []
    for file, repository, path, url, shape, licence, expected_by, also_by in PAGES:
        repo = snapshot(Path(mirrors), repository)
        commit = git(repo, "rev-parse", "HEAD").decode().strip()
        raw = git(repo, "show", f"HEAD:{path}")
        if raw.startswith(b"HTTP/"):          # XRay keeps whole HTTP responses: the body only
            raw = raw.split(b"\r\n\r\n", 1)[-1] if b"\r\n\r\n" in raw else raw.split(b"\n\n", 1)[-1]
        (pages / f"{file}.gz").write_bytes(gzip.compress(raw, mtime=0))
        html = raw.decode("utf-8", "replace")
        expected = links(html, url, expected_by)
        also = [u for u in links(html, url, also_by) if u not in expected]
        manifest.append({"file": f"pages/{file}.gz", "url": url, "repository": repository, "commit": commit,
                         "path": path, "licence": licence, "shape": shape, "expected_by": expected_by,
                         "expected": expected, "also_posts": also})
    (HERE / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"{len(manifest)} pages, {sum(len(p['expected']) for p in manifest)} expected entries")


if __name__ == "__main__":
    main(*sys.argv[1:])
