"""Listing detection on real front and archive pages (bench/corpus/listings): the reading of the
generic kinds before issue 30's listing work (`old`) and now (`new`), side by side.

    .venv/bin/python bench/bench_listings.py [--each]

For every page of bench/corpus/listings/manifest.json (real pages committed to public
repositories; the expected posts were written by reading each page, see its README) it reads the
page as a listing page of kind `html` and counts, per page: expected posts found, expected, and
false entries (anything that is neither an expected post nor a post the page shows elsewhere,
such as a recent-posts widget: tags, categories, pages, off-site links). Exits 0.
"""
from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from crawler import extract  # noqa: E402
from crawler.extract import _entry, canonicalize, selector_for, text_of  # noqa: E402
from crawler.kinds import SourceKind  # noqa: E402

CORPUS = Path(__file__).parent / "corpus" / "listings"


def old_generic_listing(sel, page_url, site):
    """crawler.extract.generic_listing as it was on main before the listing work (3d47a6a)."""
    entries = []
    for article in sel.css("article"):
        link = article.css("h1 a, h2 a, h3 a, .entry-title a, a[rel=bookmark]")[:1] or article.css("a")[:1]
        if link:
            entry = _entry(article, link.attrib.get("href"), page_url, site, text_of(link))
            if entry:
                entries.append(entry)
    if entries:
        return entries
    for link in sel.css("main h2 a, main h3 a, h2 a, h3 a"):
        entry = _entry(link, link.attrib.get("href"), page_url, site, text_of(link))
        if entry:
            entries.append(entry)
    if entries:
        return entries
    base_path = urlsplit(canonicalize(page_url, site=site)).path.rstrip("/") + "/"
    for link in sel.xpath("//a[not(ancestor::nav) and not(ancestor::header) and not(ancestor::footer) and not(ancestor::aside)]"):
        href = link.attrib.get("href")
        if not href:
            continue
        url = canonicalize(href, base=page_url, site=site)
        path = urlsplit(url).path
        if path.startswith(base_path) and path != base_path.rstrip("/") and "/page/" not in path and len(text_of(link)) >= 8:
            entry = _entry(link, href, page_url, site, text_of(link))
            if entry:
                entries.append(entry)
    return entries


def read(page: dict, old: bool) -> list[str]:
    kind = SourceKind.named("html")()
    current = extract.generic_listing
    import crawler.kinds as kinds
    kinds.generic_listing = old_generic_listing if old else current
    try:
        entries, _ = kind.listing(selector_for(page["html"], page["url"]), page["url"], page["url"])
    finally:
        kinds.generic_listing = current
    return [entry.url for entry in entries]


def score(page: dict, urls: list[str]) -> tuple[int, int, int]:
    site = page["url"]
    expected = {canonicalize(u, site=site) for u in page["expected"]}
    elsewhere = {canonicalize(u, site=site) for u in page["also_posts"]}
    found = set(urls)
    return len(found & expected), len(expected), len(found - expected - elsewhere)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--each", action="store_true", help="list the missed and false entries of each page")
    args = parser.parse_args()
    pages = json.loads((CORPUS / "manifest.json").read_text(encoding="utf-8"))
    totals = {"old": [0, 0, 0, 0, 0.0], "new": [0, 0, 0, 0, 0.0]}
    print(f"{'page':34} {'old found/expected/false':>25} {'new found/expected/false':>25}")
    for page in pages:
        page["html"] = gzip.decompress((CORPUS / page["file"]).read_bytes()).decode("utf-8", "replace")
        row = []
        for name in ("old", "new"):
            started = time.perf_counter()
            urls = read(page, name == "old")
            elapsed = time.perf_counter() - started
            found, expected, false = score(page, urls)
            total = totals[name]
            total[0] += found
            total[1] += expected
            total[2] += false
            total[3] += len(urls)
            total[4] += elapsed
            row.append(f"{found:>3}/{expected:<3}/{false:>3}")
            if args.each and name == "new":
                wanted = {canonicalize(u, site=page["url"]) for u in page["expected"]}
                others = {canonicalize(u, site=page["url"]) for u in page["also_posts"]}
                for url in sorted(wanted - set(urls)):
                    print(f"    missed {url}")
                for url in urls:
                    if url not in wanted and url not in others:
                        print(f"    false  {url}")
        print(f"{Path(page['file']).name.removesuffix('.html.gz'):34} {row[0]:>25} {row[1]:>25}")
    for name, (found, expected, false, listed, elapsed) in totals.items():
        precision = (listed - false) / listed if listed else 1.0
        print(f"{name}: {found}/{expected} expected entries found ({found / expected:.0%} recall), "
              f"{false} false of {listed} listed ({precision:.0%} precision), {elapsed * 1000:.0f} ms for "
              f"{len(pages)} pages")


if __name__ == "__main__":
    main()
