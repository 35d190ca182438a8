"""Issue 30's figures on both corpora, postwatch's reading side by side with trafilatura alone
(the anchor), in one table.

    .venv/bin/python bench/bench_corpus.py

- listing corpus (bench/corpus/listings, 11 real front and archive pages with expected post
  URLs): recall and precision of the entries kind `html`/`auto` reads (bench_listings.read), and
  for trafilatura its own link extraction, `trafilatura.spider.extract_links` (every on-site
  link its focused crawler would follow, navigation pages left out: not a listing detector, the
  nearest thing it has), scored the same way (bench_listings.score);
- article corpus (bench/corpus, 62 real article pages with reference extractions): empty bodies,
  reference first/last paragraph found, boilerplate snippets in bodies, dates
  (bench_extraction.measure). Neither manifest carries reference titles or dates: title accuracy
  is n/a, and a date is judged against the date in the page's URL where there is one;
- false events on unchanged checks: each article page read twice, and once more with a footer
  and a sidebar added, through the crawler's path (crawler.kinds post reading, crawler.items.PostItem,
  state.normalize's content hash); a changed hash is an "updated" event nobody made. For
  trafilatura alone its text's lines are hashed the same way.
"""
from __future__ import annotations

import gzip
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_extraction  # noqa: E402
import bench_listings  # noqa: E402
from crawler.extract import canonicalize, selector_for  # noqa: E402
from crawler.items import PostItem  # noqa: E402
from crawler.kinds import SourceKind  # noqa: E402
from state.normalize import normalize, text_hash  # noqa: E402

CHROME = ('<aside class="widget"><h3>Recent posts</h3><ul><li><a href="/x">A new post elsewhere</a></li></ul></aside>'
          '<footer><p>Copyright 2031. A changed footer line.</p></footer></body>')


def listing_pages() -> list[dict]:
    pages = json.loads((bench_listings.CORPUS / "manifest.json").read_text(encoding="utf-8"))
    for page in pages:
        page["html"] = gzip.decompress((bench_listings.CORPUS / page["file"]).read_bytes()).decode("utf-8", "replace")
    return pages


def trafilatura_links(page: dict) -> list[str]:
    from trafilatura.spider import extract_links
    return [canonicalize(url, site=page["url"]) for url in extract_links(page["html"], page["url"])]


def listing_row(pages: list[dict], read) -> tuple[int, int, int, int, float]:
    found = expected = false = listed = 0
    started = time.perf_counter()
    for page in pages:
        urls = list(dict.fromkeys(read(page)))
        f, e, x = bench_listings.score(page, urls)
        found, expected, false, listed = found + f, expected + e, false + x, listed + len(urls)
    return found, expected, false, listed, (time.perf_counter() - started) * 1000 / len(pages)


def crawler_hash(page: dict, html: str | None = None) -> str:
    """The content hash a check stores for this page, read as kind `html`/`auto` reads it."""
    kind = SourceKind.named("html")()
    post = kind.post(selector_for(html or page["html"], page["url"]), page["url"], page["url"])
    item = PostItem(url=post.url, title=post.title, published=post.published, body_html=post.body_html,
                    summary=None, origin="page", reader=post.reader)
    return normalize(item.body_html).content_hash


def trafilatura_hash(precision: bool):
    import trafilatura

    def read(page: dict, html: str | None = None) -> str:
        text = trafilatura.extract(html or page["html"], url=page["url"], include_comments=False,
                                   favor_precision=precision, include_tables=True) or ""
        return text_hash([line.strip() for line in text.splitlines() if line.strip()])
    return read


def false_events(pages: list[dict], hash_of) -> tuple[int, int]:
    again = rechromed = 0
    for page in pages:
        first = hash_of(page)
        again += hash_of(page) != first
        rechromed += hash_of(page, page["html"].replace("</body>", CHROME, 1)) != first
    return again, rechromed


def main() -> None:
    columns = ("postwatch (html/auto)", "trafilatura default", "trafilatura precision")
    rows: list[tuple[str, list[str]]] = []

    listings = listing_pages()
    ours = listing_row(listings, lambda page: bench_listings.read(page, old=False))
    theirs = listing_row(listings, trafilatura_links)
    def recall(r): return f"{r[0]}/{r[1]} ({r[0] / r[1]:.0%})"
    def precision(r): return f"{r[3] - r[2]}/{r[3]} ({(r[3] - r[2]) / r[3]:.0%})" if r[3] else "n/a"
    rows.append((f"listing recall ({len(listings)} pages)", [recall(ours), recall(theirs), "(same as default)"]))
    rows.append(("listing precision", [precision(ours), precision(theirs), "(same as default)"]))

    pages = bench_extraction.load()
    n = len(pages)
    evaluated = sum("with" in p for p in pages)
    readers = (bench_extraction.html_kind(True), bench_extraction.trafilatura_alone(False),
               bench_extraction.trafilatura_alone(True))
    measured = [bench_extraction.measure(name, read, pages, False) for name, read in zip(columns, readers)]
    rows.append(("title accuracy", ["n/a (no reference titles)"] * 3))
    rows.append((f"dated ({n} pages)", [f"{r['dated']}/{n}" for r in measured]))
    rows.append(("date = URL's date (dated pages with one)", [f"{r['url_agrees']}/{r['url_dated']}" for r in measured]))
    rows.append(("reference first paragraph found", [f"{r['first']}/{n}" for r in measured]))
    rows.append(("reference last paragraph found", [f"{r['last']}/{n}" for r in measured]))
    rows.append(("empty bodies", [f"{r['empty']}/{n}" for r in measured]))
    rows.append((f"'with' snippets found ({evaluated} pages)", [f"{r['with']}/{r['with_all']}" for r in measured]))
    rows.append(("boilerplate snippets in bodies", [f"{r['without']}/{r['without_all']}" for r in measured]))
    rows.append(("pages with boilerplate in body", [f"{r['without_pages']}/{evaluated}" for r in measured]))

    events = [false_events(pages, crawler_hash), false_events(pages, trafilatura_hash(False)),
              false_events(pages, trafilatura_hash(True))]
    rows.append(("false events: read again unchanged", [f"{e[0]}/{n}" for e in events]))
    rows.append(("false events: new footer and sidebar", [f"{e[1]}/{n}" for e in events]))
    rows.append(("ms per article page", [f"{r['ms']:.1f}" for r in measured]))
    rows.append(("ms per listing page", [f"{ours[4]:.1f}", f"{theirs[4]:.1f}", ""]))

    print(f"listing corpus: {len(listings)} real front/archive pages; article corpus: {n} real pages "
          f"({evaluated} with with/without snippets, {n - evaluated} with articleBody)\n")
    width = max(len(label) for label, _ in rows) + 2
    print(f"{'':<{width}}" + "".join(f"{c:>26}" for c in columns))
    for label, values in rows:
        print(f"{label:<{width}}" + "".join(f"{v:>26}" for v in values))
    print("\ntrafilatura's listing column is trafilatura.spider.extract_links (on-site links, navigation "
          "pages left out): the nearest it has to listing detection, not an equivalent.")


if __name__ == "__main__":
    main()
