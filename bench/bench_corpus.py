"""Issue 30's figures on the build set and on the held-out set, postwatch's reading side by side
with trafilatura alone (the anchor).

    .venv/bin/python bench/bench_corpus.py [--set build|heldout|heldout2|both|all] [--each]

Three sets of real pages, none written here:
- build: the pages looked at while the listing detection and the extraction settings were written
  (bench/corpus/listings: 11 front and archive pages; bench/corpus: 62 article pages);
- held-out: pages nobody here looked at before these figures were first taken
  (bench/corpus/heldout: real front pages with each entry's URL, title and date as the page shows
  them, and article pages with a reference extraction, some with reference titles and dates);
- second held-out: the same form from other repositories (bench/corpus/heldout2), taken after the
  first held-out set had been looked at and the detection changed against it.

Per set:
- listing recall and precision of the entries kind `html`/`auto` reads, and for trafilatura its
  own link extraction, `trafilatura.spider.extract_links` (every on-site link its focused crawler
  would follow: not a listing detector, the nearest thing it has), scored the same way. Posts a
  page shows outside its listing (a recent-posts widget) are neither hits nor false entries. The
  held-out totals are also given without the news index, whose 197 stories would outweigh the
  blogs' front pages;
- listing title and date accuracy, where the reference has them (held-out only): of the expected
  entries found, the title equal to the page's (white space aside), the date on the same day (a
  day either side: a time given in UTC can fall on the next day);
- article pages: empty bodies, the reference's first and last paragraph found in the body,
  boilerplate snippets in bodies (build set: trafilatura's `without` snippets), the page's title,
  and "dated": a date on pages whose reference has one, right within a day;
- false events on unchanged checks: each article page read twice, and once more with a footer and
  a sidebar added, through the crawler's path (crawler.kinds post reading, crawler.items.PostItem,
  state.normalize's content hash); a changed hash is an "updated" event nobody made. For
  trafilatura alone its text's lines are hashed the same way.
"""
from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from datetime import date, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_extraction  # noqa: E402
from bench_extraction import found, squash  # noqa: E402
from crawler.extract import canonicalize, selector_for  # noqa: E402
from crawler.items import PostItem  # noqa: E402
from crawler.kinds import SourceKind  # noqa: E402
from state.normalize import normalize, text_hash  # noqa: E402

CORPUS = Path(__file__).parent / "corpus"
CHROME = ('<aside class="widget"><h3>Recent posts</h3><ul><li><a href="/x">A new post elsewhere</a></li></ul></aside>'
          '<footer><p>Copyright 2031. A changed footer line.</p></footer></body>')
COLUMNS = ("postwatch (html/auto)", "trafilatura default", "trafilatura precision")
NEWS_INDEX = "news-"


# ------------------------------------------------------------------------------------------
# The two sets, in one form
# ------------------------------------------------------------------------------------------
def _html(folder: Path, file: str) -> str:
    return gzip.decompress((folder / file).read_bytes()).decode("utf-8", "replace")


def build_set() -> tuple[list[dict], list[dict]]:
    folder = CORPUS / "listings"
    listings = []
    for page in json.loads((folder / "manifest.json").read_text(encoding="utf-8")):
        listings.append({"name": Path(page["file"]).name.removesuffix(".html.gz"), "url": page["url"],
                         "html": _html(folder, page["file"]), "entries": [{"url": u} for u in page["expected"]],
                         "also_posts": page["also_posts"], "ignore_query": False})
    return listings, bench_extraction.load()


def heldout_set(folder: Path = CORPUS / "heldout") -> tuple[list[dict], list[dict]]:
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    listings = [{**page, "name": Path(page["file"]).name.removesuffix(".html.gz"), "html": _html(folder, page["file"])}
                for page in manifest["listings"]]
    articles = [{**page, "html": _html(folder, page["file"])} for page in manifest["articles"]]
    return listings, articles


def heldout2_set() -> tuple[list[dict], list[dict]]:
    return heldout_set(CORPUS / "heldout2")


# ------------------------------------------------------------------------------------------
# Listings
# ------------------------------------------------------------------------------------------
def identity(url: str, page: dict) -> str:
    url = canonicalize(url, site=page["url"])
    if page.get("ignore_query"):
        parts = urlsplit(url)
        url = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    return url


def postwatch_listing(page: dict) -> list[tuple[str, str | None, object]]:
    kind = SourceKind.named("html")()
    entries, _ = kind.listing(selector_for(page["html"], page["url"]), page["url"], page["url"])
    return [(entry.url, entry.title, entry.published) for entry in entries]


def trafilatura_listing(page: dict) -> list[tuple[str, str | None, object]]:
    from trafilatura.spider import extract_links
    return [(url, None, None) for url in extract_links(page["html"], page["url"])]


def same_day(value, reference: str) -> bool:
    if value is None:
        return False
    day = value.date() if isinstance(value, datetime) else (value if isinstance(value, date) else
                                                             date.fromisoformat(str(value)[:10]))
    return abs((day - date.fromisoformat(reference[:10])).days) <= 1


def score_listing(page: dict, read: list[tuple[str, str | None, object]]) -> dict:
    expected = {identity(e["url"], page): e for e in page["entries"]}
    elsewhere = {identity(u, page) for u in page["also_posts"]}
    got: dict[str, tuple] = {}
    for url, title, published in read:
        got.setdefault(identity(url, page), (title, published))
    hits = [u for u in got if u in expected]
    row = {"found": len(hits), "expected": len(expected), "listed": len(got),
           "false": sum(1 for u in got if u not in expected and u not in elsewhere),
           "titled": 0, "title_ok": 0, "dated_ref": 0, "dated": 0, "date_ok": 0,
           "missed": sorted(set(expected) - set(got)), "false_urls": [u for u in got if u not in expected and u not in elsewhere]}
    for url in hits:
        reference, (title, published) = expected[url], got[url]
        if reference.get("title"):
            row["titled"] += 1
            row["title_ok"] += squash(title or "") == squash(reference["title"])
        if reference.get("date"):
            row["dated_ref"] += 1
            row["dated"] += published is not None
            row["date_ok"] += same_day(published, reference["date"])
    return row


def listing_totals(pages: list[dict], reader, each: bool, label: str) -> dict:
    totals: dict = {}
    started = time.perf_counter()
    for page in pages:
        row = score_listing(page, reader(page))
        if each:
            print(f"  {label:<22} {page['name']:<28} found {row['found']}/{row['expected']}, false {row['false']} "
                  f"of {row['listed']}; titles {row['title_ok']}/{row['titled']}, dates {row['date_ok']}/{row['dated_ref']}")
            if label.startswith("postwatch"):
                for url in row["missed"][:8]:
                    print(f"      missed {url}")
                for url in row["false_urls"][:8]:
                    print(f"      false  {url}")
        for key, value in row.items():
            if isinstance(value, int):
                totals[key] = totals.get(key, 0) + value
                if not page["name"].startswith(NEWS_INDEX):
                    totals["blog_" + key] = totals.get("blog_" + key, 0) + value
    totals["ms"] = (time.perf_counter() - started) * 1000 / max(len(pages), 1)
    return totals


# ------------------------------------------------------------------------------------------
# Articles
# ------------------------------------------------------------------------------------------
def postwatch_article(page: dict) -> tuple[str, str | None, object]:
    kind = SourceKind.named("html")()
    post = kind.post(selector_for(page["html"], page["url"]), page["url"], page["url"])
    from state.normalize import paragraphs_of
    try:
        text = "\n\n".join(paragraphs_of(post.body_html))
    except ValueError:      # control characters lxml refuses (the checks sanitise them at entry)
        text = "\n\n".join(paragraphs_of(bench_extraction._CONTROL.sub("", post.body_html)))
    return text, post.title, post.published


def trafilatura_article(precision: bool):
    import htmldate
    import trafilatura
    from trafilatura import extract_metadata

    def read(page: dict) -> tuple[str, str | None, object]:
        text = trafilatura.extract(page["html"], url=page["url"], include_comments=False, favor_precision=precision,
                                   include_tables=True) or ""
        meta = extract_metadata(page["html"], default_url=page["url"])
        published = htmldate.find_date(page["html"], url=page["url"], original_date=True)
        return text, (meta.title if meta else None), published
    return read


def article_totals(pages: list[dict], reader) -> dict:
    row = {"pages": len(pages), "empty": 0, "first": 0, "last": 0, "with": 0, "with_all": 0, "without": 0,
           "without_all": 0, "without_pages": 0, "snippet_pages": 0, "titled": 0, "title_ok": 0,
           "dated_ref": 0, "dated": 0, "date_ok": 0}
    started = time.perf_counter()
    for page in pages:
        text, title, published = reader(page)
        body = squash(text or "")
        row["empty"] += not body
        row["first"] += found(page.get("first"), body)
        row["last"] += found(page.get("last"), body)
        if "with" in page:
            row["snippet_pages"] += 1
            row["with"] += sum(found(s, body) for s in page["with"])
            row["with_all"] += len(page["with"])
            present = [s for s in page.get("without", []) if found(s, body)]
            row["without"] += len(present)
            row["without_all"] += len(page.get("without", []))
            row["without_pages"] += bool(present)
        if page.get("title"):
            row["titled"] += 1
            row["title_ok"] += squash(title or "") == squash(page["title"])
        if page.get("published"):
            row["dated_ref"] += 1
            row["dated"] += published is not None
            row["date_ok"] += same_day(published, page["published"])
    row["ms"] = (time.perf_counter() - started) * 1000 / max(len(pages), 1)
    return row


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


# ------------------------------------------------------------------------------------------
# The table
# ------------------------------------------------------------------------------------------
def ratio(part: int, whole: int) -> str:
    return f"{part}/{whole} ({part / whole:.0%})" if whole else "n/a"


def listing_rows(listings: list[dict], each: bool) -> list[tuple[str, list[str]]]:
    ours = listing_totals(listings, postwatch_listing, each, COLUMNS[0])
    theirs = listing_totals(listings, trafilatura_listing, each, COLUMNS[1])
    same = "(as default)"
    rows = [(f"listing recall ({len(listings)} pages)", [ratio(ours["found"], ours["expected"]),
                                                          ratio(theirs["found"], theirs["expected"]), same]),
            ("listing precision", [ratio(ours["listed"] - ours["false"], ours["listed"]),
                                   ratio(theirs["listed"] - theirs["false"], theirs["listed"]), same])]
    blogs = sum(1 for p in listings if not p["name"].startswith(NEWS_INDEX))
    if blogs != len(listings):
        rows += [(f"  blogs only: recall ({blogs} pages)", [ratio(ours["blog_found"], ours["blog_expected"]),
                                                            ratio(theirs["blog_found"], theirs["blog_expected"]), same]),
                 ("  blogs only: precision", [ratio(ours["blog_listed"] - ours["blog_false"], ours["blog_listed"]),
                                              ratio(theirs["blog_listed"] - theirs["blog_false"], theirs["blog_listed"]),
                                              same])]
    if ours["titled"] or ours["dated_ref"]:
        rows += [("listing titles right (found, with ref.)", [ratio(ours["title_ok"], ours["titled"]), "n/a", "n/a"]),
                 ("listing entries dated (page shows one)", [ratio(ours["dated"], ours["dated_ref"]), "n/a", "n/a"]),
                 ("listing dates right", [ratio(ours["date_ok"], ours["dated_ref"]), "n/a", "n/a"])]
    else:
        rows.append(("listing titles/dates", ["n/a (no reference)"] * 3))
    rows.append(("ms per listing page", [f"{ours['ms']:.1f}", f"{theirs['ms']:.1f}", ""]))
    return rows


def article_rows(articles: list[dict]) -> list[tuple[str, list[str]]]:
    n = len(articles)
    readers = (postwatch_article, trafilatura_article(False), trafilatura_article(True))
    measured = [article_totals(articles, read) for read in readers]
    snippets = measured[0]["snippet_pages"]
    rows = [(f"empty bodies ({n} pages)", [f"{r['empty']}/{n}" for r in measured]),
            ("reference first paragraph found", [ratio(r["first"], n) for r in measured]),
            ("reference last paragraph found", [ratio(r["last"], n) for r in measured])]
    if snippets:
        rows += [(f"'with' snippets found ({snippets} pages)", [ratio(r["with"], r["with_all"]) for r in measured]),
                 ("boilerplate snippets in bodies", [f"{r['without']}/{r['without_all']}" for r in measured]),
                 ("pages with boilerplate in body", [f"{r['without_pages']}/{snippets}" for r in measured])]
    if measured[0]["titled"]:
        rows.append((f"page title right ({measured[0]['titled']} with ref.)",
                     [ratio(r["title_ok"], r["titled"]) for r in measured]))
    if measured[0]["dated_ref"]:
        rows += [(f"dated ({measured[0]['dated_ref']} pages showing a date)",
                  [ratio(r["dated"], r["dated_ref"]) for r in measured]),
                 ("date right (within a day)", [ratio(r["date_ok"], r["dated_ref"]) for r in measured])]
    else:
        dated = [bench_extraction.measure(c, read, articles, False) for c, read in
                 zip(COLUMNS, (bench_extraction.html_kind(True), bench_extraction.trafilatura_alone(False),
                               bench_extraction.trafilatura_alone(True)))]
        rows += [(f"dated ({n} pages; no reference dates)", [f"{r['dated']}/{n}" for r in dated]),
                 ("date = URL's date (dated pages with one)", [f"{r['url_agrees']}/{r['url_dated']}" for r in dated])]
    events = [false_events(articles, crawler_hash), false_events(articles, trafilatura_hash(False)),
              false_events(articles, trafilatura_hash(True))]
    rows += [("false events: read again unchanged", [f"{e[0]}/{n}" for e in events]),
             ("false events: new footer and sidebar", [f"{e[1]}/{n}" for e in events]),
             ("ms per article page", [f"{r['ms']:.1f}" for r in measured])]
    return rows


def table(title: str, rows: list[tuple[str, list[str]]]) -> None:
    width = max(len(label) for label, _ in rows) + 2
    print(f"\n{title}")
    print(f"{'':<{width}}" + "".join(f"{c:>24}" for c in COLUMNS))
    for label, values in rows:
        print(f"{label:<{width}}" + "".join(f"{v:>24}" for v in values))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", choices=("build", "heldout", "heldout2", "both", "all"), default="both",
                        help="both: build and heldout; all: the three sets")
    parser.add_argument("--each", action="store_true", help="one line per listing page and reader")
    args = parser.parse_args()
    sets = {"build": build_set, "heldout": heldout_set, "heldout2": heldout2_set}
    chosen = {"both": ("build", "heldout"), "all": tuple(sets)}.get(args.set, (args.set,))
    for name in chosen:
        listings, articles = sets[name]()
        table(f"{name} set: {len(listings)} listing pages ({sum(len(p['entries']) for p in listings)} entries), "
              f"{len(articles)} article pages", listing_rows(listings, args.each) + article_rows(articles))
    print("\ntrafilatura's listing column is trafilatura.spider.extract_links (on-site links, navigation "
          "pages left out): the nearest it has to listing detection, not an equivalent. Its titles and dates "
          "are trafilatura.extract_metadata's title and htmldate.find_date.")


if __name__ == "__main__":
    main()
