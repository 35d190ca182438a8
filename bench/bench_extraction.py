"""Post bodies and dates of real pages (bench/corpus): the old heuristics, the new path of the
generic kinds, and trafilatura/htmldate alone as the anchor.

    .venv/bin/python bench/bench_extraction.py [--each]

For every page of bench/corpus/manifest.json (real blog and news pages committed to public
repositories; see bench/corpus/README.md) it reads the page as a post page of kind `html` and
counts:
- empty bodies (an empty body hides every later edit of that post);
- reference first paragraph found in the body (scrapinghub's ground truth: the first paragraph
  of `articleBody`; trafilatura's evaluation pages: the first `with` snippet), and the last;
- `with` snippets found / `without` snippets (boilerplate: navigation, footers, related posts,
  dates, comments) present, for trafilatura's evaluation pages;
- pages with a date, and of those whose URL holds a date (/2019/05/21/), how many agree with it (within a day:
  a time given in UTC can fall on the next day of the URL's local date).
"""
from __future__ import annotations

import argparse
import gzip
import json
import re
import sys
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from crawler.extract import selector_for  # noqa: E402
from crawler.kinds import SourceKind  # noqa: E402
from state.normalize import paragraphs_of  # noqa: E402

_URL_DATE = re.compile(r"/(20[012]\d)[/-](\d\d)(?:[/-](\d\d)[/-])?")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
CORPUS = Path(__file__).parent / "corpus"


def squash(text: str) -> str:
    return " ".join(re.sub(r"[\u00a0\u200b\u2009\u202f]", " ", text).split()).lower()


def load() -> list[dict]:
    pages = json.loads((CORPUS / "manifest.json").read_text(encoding="utf-8"))
    for page in pages:
        raw = gzip.decompress((CORPUS / page["file"]).read_bytes())
        page["html"] = raw.decode("utf-8", "replace")
        if "articleBody" in page:
            paragraphs = [p.strip() for p in page["articleBody"].split("\n") if len(p.strip()) >= 20]
            page["first"] = paragraphs[0] if paragraphs else None
            page["last"] = paragraphs[-1] if paragraphs else None
        else:
            page["first"] = page["with"][0] if page.get("with") else None
            page["last"] = page["with"][-1] if page.get("with") else None
    return pages


def html_kind(main_text: bool):
    kind = SourceKind.named("html")()
    kind.reads_main_text = main_text
    def read(page):
        post = kind.post(selector_for(page["html"], page["url"]), page["url"], page["url"])
        try:
            return "\n\n".join(paragraphs_of(post.body_html)), post.published
        except ValueError:   # control characters lxml refuses (the checks branch sanitises them at entry)
            page.setdefault("crashed", set()).add(main_text)
            return "\n\n".join(paragraphs_of(_CONTROL.sub("", post.body_html))), post.published
    return read


def trafilatura_alone(precision: bool):
    import htmldate
    import trafilatura

    def read(page):
        text = trafilatura.extract(page["html"], url=page["url"], include_comments=False, favor_precision=precision,
                                   include_tables=True) or ""
        date = htmldate.find_date(page["html"], url=page["url"], original_date=True)
        return text, date
    return read


def found(snippet: str | None, text: str) -> bool:
    if not snippet:
        return False
    snippet = squash(snippet)
    return snippet[:120] in text if len(snippet) > 120 else snippet in text


def measure(name: str, read, pages: list[dict], each: bool) -> dict:
    row = {"empty": 0, "first": 0, "last": 0, "with": 0, "with_all": 0, "without_pages": 0, "without": 0,
           "without_all": 0, "dated": 0, "url_dated": 0, "url_agrees": 0, "pages": len(pages)}
    started = time.perf_counter()
    for page in pages:
        text, date = read(page)
        body = squash(text or "")
        row["empty"] += not body
        row["first"] += found(page["first"], body)
        row["last"] += found(page["last"], body)
        row["dated"] += bool(date)
        in_url = _URL_DATE.search(page["url"] or "")
        if in_url and date:
            row["url_dated"] += 1
            # within a day: an explicit time in UTC may be the next day of the URL's local date
            day = datetime.fromisoformat(date[:10]) if isinstance(date, str) else date.replace(tzinfo=None)
            year, month, mday = (int(g) if g else None for g in in_url.groups())
            if mday:
                row["url_agrees"] += abs((day - datetime(year, month, mday)).days) <= 1
            else:
                row["url_agrees"] += (day.year, day.month) == (year, month)
        if "with" in page:
            row["with"] += sum(found(s, body) for s in page["with"])
            row["with_all"] += len(page["with"])
            present = [s for s in page.get("without", []) if found(s, body)]
            row["without"] += len(present)
            row["without_all"] += len(page.get("without", []))
            row["without_pages"] += bool(present)
        if each:
            print(f"  {name:<22} {page['file'][6:60]:<56} empty={not body!s:<5} first={found(page['first'], body)!s:<5} "
                  f"date={date}")
    row["ms"] = (time.perf_counter() - started) * 1000 / len(pages)
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--each", action="store_true", help="one line per page and reader")
    args = parser.parse_args()
    pages = load()
    readers = {
        "old heuristics (html)": html_kind(False),
        "new path (html/auto)": html_kind(True),
        "trafilatura precision": trafilatura_alone(True),
        "trafilatura default": trafilatura_alone(False),
    }
    evaluated = sum("with" in p for p in pages)
    print(f"{len(pages)} real pages: {evaluated} blog pages from trafilatura's evaluation set (with/without "
          f"snippets), {len(pages) - evaluated} from scrapinghub/article-extraction-benchmark (articleBody)\n")
    print(f"{'reader':<24}{'empty':>7}{'first':>8}{'last':>8}{'with':>10}{'boilerplate':>14}{'pages w/ bp':>12}"
          f"{'dated':>8}{'= URL date':>12}{'ms/page':>9}")
    for name, read in readers.items():
        r = measure(name, read, pages, args.each)
        print(f"{name:<24}{r['empty']:>4}/{r['pages']:<3}{r['first']:>4}/{r['pages']:<3}{r['last']:>4}/{r['pages']:<3}"
              f"{r['with']:>5}/{r['with_all']:<4}{r['without']:>8}/{r['without_all']:<5}{r['without_pages']:>7}/{evaluated:<4}"
              f"{r['dated']:>4}/{r['pages']:<3}{r['url_agrees']:>6}/{r['url_dated']:<5}{r['ms']:>7.1f}")
    print("\nfalse edits: the body's hash changes when the page is read again unchanged, or with a new footer line")
    chrome = ('<aside class="widget"><h3>Recent posts</h3><ul><li><a href="/x">A new post elsewhere</a></li></ul></aside>'
              '<footer><p>Copyright 2031. A changed footer line.</p></footer></body>')
    for main_text, name in ((False, "old heuristics"), (True, "new path")):
        read = html_kind(main_text)
        again = rechromed = 0
        for page in pages:
            first = read(page)[0]
            again += read(page)[0] != first
            rechromed += read({**page, "html": page["html"].replace("</body>", chrome, 1)})[0] != first
        print(f"  {name:<22} unchanged: {again}/{len(pages)}   new footer and sidebar: {rechromed}/{len(pages)}")
    for main_text, name in ((False, "old heuristics"), (True, "new path")):
        crashed = [p["file"] for p in pages if main_text in p.get("crashed", ())]
        if crashed:
            print(f"{name}: {len(crashed)} bodies hold control characters state.normalize refuses "
                  f"(counted after removing them): {', '.join(crashed)}")


if __name__ == "__main__":
    main()
