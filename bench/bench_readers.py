"""Which reader produced each body of bench/corpus, and whether it flips (issue: extraction
versions). A body read by another reader than the stored one becomes the new reference silently
(state.changes.reader_changed), so a page whose reader flips between reads (trafilatura finding
nothing on one read, the heuristics used) would re-reference on every flip and hide a real edit
made at that moment. This counts, over the 62 real pages read as post pages of kind `html`:

- the readers of the new path (trafilatura, the heuristics fallback);
- bodies whose hash differs between the old heuristics and the new path: the false "updated"
  mails an upgrade would have sent for already stored posts, without extraction versions;
- reader flips and hash changes when the same page is read again (--reads times), and when it is
  read again with a new footer and sidebar (the site's chrome changed).

    .venv/bin/python bench/bench_readers.py [--reads 3]
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_extraction import load  # noqa: E402
from crawler.extract import selector_for  # noqa: E402
from crawler.kinds import SourceKind  # noqa: E402
from state.normalize import normalize  # noqa: E402

CHROME = ('<aside class="widget"><h3>Recent posts</h3><ul><li><a href="/x">A new post elsewhere</a></li></ul></aside>'
          '<footer><p>Copyright 2031. A changed footer line.</p></footer></body>')


def read(kind, page: dict, html: str | None = None) -> tuple[str | None, str]:
    post = kind.post(selector_for(html or page["html"], page["url"]), page["url"], page["url"])
    return post.reader, normalize(post.body_html).content_hash


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reads", type=int, default=3, help="reads of each page by the new path")
    args = parser.parse_args()
    pages = load()
    new, old = SourceKind.named("html")(), SourceKind.named("html")()
    old.reads_main_text = False
    readers: Counter = Counter()
    upgraded = flips = changed = chrome_flips = chrome_changed = 0
    for page in pages:
        first_reader, first_hash = read(new, page)
        readers[first_reader] += 1
        upgraded += read(old, page)[1] != first_hash
        again = [read(new, page) for _ in range(args.reads - 1)]
        flips += any(reader != first_reader for reader, _ in again)
        changed += any(digest != first_hash for _, digest in again)
        chrome_reader, chrome_hash = read(new, page, page["html"].replace("</body>", CHROME, 1))
        chrome_flips += chrome_reader != first_reader
        chrome_changed += chrome_hash != first_hash
        if chrome_reader != first_reader:
            print(f"  reader flips with new chrome: {page['file']}: {first_reader} -> {chrome_reader}")
    n = len(pages)
    print(f"{n} real pages read as kind html, {args.reads} reads each")
    print(f"  readers of the new path: {', '.join(f'{r}: {c}' for r, c in readers.most_common())}")
    print(f"  body differs from the old heuristics' (false edits an upgrade would mail without readers): {upgraded}/{n}")
    print(f"  read again unchanged: reader flips {flips}/{n}, body hash changes {changed}/{n}")
    print(f"  read again with a new footer and sidebar: reader flips {chrome_flips}/{n}, body hash changes {chrome_changed}/{n}")


if __name__ == "__main__":
    main()
