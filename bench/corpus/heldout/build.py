"""Rebuild bench/corpus/heldout/ (the held-out set of issue 30) from local snapshots (bare git
dirs) of its source repositories.

    python bench/corpus/heldout/build.py /work/.mirror   # the folder holding owner+name/repo snapshots

Nobody here looked at these pages while writing the listing detection or choosing the extraction
settings; the figures on them are the held-out measurement (bench/bench_corpus.py --set heldout).

Writes pages/*.html.gz and manifest.json:
- `listings`: real front pages; `entries` are the page's own listing entries in page order (URL,
  title and date as the page shows them), found by CSS selectors written for each page's theme
  after reading its HTML (ENTRY: one element per entry; in it LINK the permalink, TITLE the
  title's text, DATE the element holding the date, as an attribute or text in DATE_FORMAT).
  `also_posts`: posts the page shows elsewhere (a recent-posts widget): neither a hit nor false.
- `articles`: real article pages with a reference extraction: Mozilla Readability's test pages
  (reference body `expected.html`, title and `publishedTime` from `expected-metadata.json`) and
  scrapinghub/article-extraction-benchmark pages not in bench/corpus (`articleBody`).
Nothing here is imported by postwatch, and nothing here runs postwatch's code.
"""
from __future__ import annotations

import gzip
import json
import re
import sys
from datetime import datetime
from pathlib import Path
from urllib.parse import urljoin

from parsel import Selector

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))     # bench/corpus: snapshots.py
from snapshots import git, readability_articles, snapshot, text  # noqa: E402

HERE = Path(__file__).parent
NO_LICENCE = "no licence file in the repository; the built pages of the author's own blog"

# name, repository, path, page URL (how it was set), shape, licence,
# ENTRY, LINK, TITLE, DATE (css, "@attr" or "text"), DATE_FORMAT, ALSO (css of posts shown elsewhere)
LISTINGS = [
    ("wp-weeklyedit-home", "thomaswhite/dt-web-restore", "index.html",
     ("https://weeklyedit.example/", "assumed: the saved site links relatively and names no origin"),
     "WordPress front page: a static page whose page-builder panel holds the latest posts as "
     "<article class='hentry'> inside the page's own hentry <article>, a recent-posts widget beside it",
     NO_LICENCE.replace("blog", "WordPress site, saved as static files"),
     "article.post", "h1.entry-title a", "h1.entry-title a", ("time.entry-date", "@datetime"), None,
     ".widget_recent_entries a"),
    ("news-cnn-home", "codelucas/newspaper", "tests/data/html/cnn_main_site.html",
     ("http://www.cnn.com/", "the page newspaper's tests read it as"),
     "news index (CNN's home page, 2014): stories in many sections of bullet lists, a headline bar, "
     "video and gallery modules", "MIT (repository); page content: CNN's",
     "a[href*='/2013/'], a[href*='/2014/']", None, None, None, None,
     "a[href^='/video/'], a[href*='/video/']"),
    ("hugo-cleanwhite-home", "0x-Yolo/hugo_blog", "public/index.html",
     ("https://forerun.example/", "assumed: Hugo's baseURL is empty and the page links relatively"),
     "Hugo (CleanWhite theme): div.post-preview per post, the whole preview one link, date in text",
     NO_LICENCE, "div.post-preview", "a", "h2.post-title", ("p.post-meta", "text"), "%A, %B %d, %Y", None),
    ("octopress-home", "0111001101111010/octopress_blog_", "index.html",
     ("http://stanzheng.github.io/", "the page's rel=canonical"),
     "Jekyll/Octopress: <article> per post, excerpt and 'read on' link, date in <time>",
     NO_LICENCE, "article", "h1.link a", "h1.link a", ("time", "@datetime"), None, None),
    ("hexo-next-schemaorg-home", "275244143/Hexo", "public/index.html",
     ("http://192.154.218.26/", "the blog's _config.yml url"),
     "Hexo NexT (an older version than bench/corpus/listings'): schema.org Article microdata per post "
     "(itemprop=url title link, datePublished), one entry without a title",
     NO_LICENCE, "article[itemtype*='schema.org/Article']", "a.post-title-link", "a.post-title-link",
     ("time[itemprop~=datePublished]", "@datetime"), None, None),
]

READABILITY = ["aclu", "ars-1", "article-author-tag", "bbc-1", "blogger", "bug-1255978", "citylab-1", "cnet",
               "dropbox-blog", "ebb-org", "engadget", "firefox-nightly-blog", "gitlab-blog", "heise", "herald-sun-1",
               "iab-1", "ietf-1", "keep-images", "lazy-image-1", "lemonde-1", "liberation-1", "medium-1", "medium-2",
               "mercurial", "quanta-1", "salon-1", "seattletimes-1", "simplyfound-1", "spiceworks", "telegraph",
               "theverge", "toc-missing", "topicseed-1", "tumblr", "v8-blog", "wordpress"]
# The news index's stories are its www.cnn.com dated story pages, one per path (the same story is
# linked from several sections with a different ?hpt= tracking query, which the scorer ignores
# for this page: `ignore_query`); stories on other CNN hosts and videos are `also_posts`.
STORY_ONLY = {"news-cnn-home": re.compile(r"^http://www\.cnn\.com/20\d\d/\d\d/\d\d/(?!.*/video/)")}
AEB_SKIP = 25        # bench/corpus took the first 25 by name under 60 kB; these are the next ones
AEB_TAKE = 15
AEB_MAX_GZ = 60_000








def reference_date(entry: Selector, spec, fmt):
    if not spec:
        return None
    css, where = spec
    node = entry.css(css)[:1]
    if not node:
        return None
    if where.startswith("@"):
        return (node.attrib.get(where[1:]) or "")[:10] or None
    found = re.search(r"[A-Z][a-z]+day, [A-Z][a-z]+ \d{1,2}, \d{4}", text(node[0]))
    return datetime.strptime(found.group(0), fmt).date().isoformat() if found else None


def listing_entries(html: str, url: str, entry_css, link_css, title_css, date_spec, fmt) -> list[dict]:
    sel = Selector(text=html)
    entries, seen = [], set()
    for entry in sel.css(entry_css):
        link = entry.css(link_css)[:1] if link_css else [entry]
        if not link or not link[0].attrib.get("href"):
            continue
        absolute = urljoin(url, link[0].attrib["href"]).split("#", 1)[0]
        if absolute in seen:
            continue
        seen.add(absolute)
        title_node = entry.css(title_css)[:1] if title_css else [entry]
        entries.append({"url": absolute, "title": text(title_node[0]) if title_node else "",
                        "date": reference_date(entry, date_spec, fmt)})
    return entries


def build_listings(mirrors: Path, pages: Path) -> list[dict]:
    manifest = []
    for (name, repository, path, (url, url_from), shape, licence, entry_css, link_css, title_css, date_spec, fmt,
         also_css) in LISTINGS:
        repo = snapshot(mirrors, repository)
        commit = git(repo, "rev-parse", "HEAD").decode().strip()
        raw = git(repo, "show", f"HEAD:{path}")
        (pages / f"{name}.html.gz").write_bytes(gzip.compress(raw, mtime=0))
        html = raw.decode("utf-8", "replace")
        entries = listing_entries(html, url, entry_css, link_css, title_css, date_spec, fmt)
        also = []
        if name in STORY_ONLY:
            also = [e["url"].split("?", 1)[0] for e in entries if not STORY_ONLY[name].match(e["url"])]
            stories = {}
            for e in entries:
                if STORY_ONLY[name].match(e["url"]):
                    stories.setdefault(e["url"].split("?", 1)[0], {**e, "url": e["url"].split("?", 1)[0]})
            entries, also = list(stories.values()), list(dict.fromkeys(also))
        expected = {e["url"] for e in entries}
        for href in Selector(text=html).css(also_css).xpath("@href").getall() if also_css else []:
            absolute = urljoin(url, href).split("#", 1)[0]
            if name in STORY_ONLY:
                absolute = absolute.split("?", 1)[0]
            if absolute not in expected and absolute not in also:
                also.append(absolute)
        manifest.append({"file": f"pages/{name}.html.gz", "url": url, "url_from": url_from, "repository": repository,
                         "commit": commit, "path": path, "licence": licence, "shape": shape,
                         "entries_by": {"entry": entry_css, "link": link_css, "title": title_css,
                                        "date": list(date_spec) if date_spec else None},
                         "ignore_query": name in STORY_ONLY, "entries": entries, "also_posts": also})
    return manifest




def build_articles(mirrors: Path, pages: Path) -> list[dict]:
    manifest = readability_articles(mirrors, pages, READABILITY)
    repo = snapshot(mirrors, "scrapinghub/article-extraction-benchmark")
    commit = git(repo, "rev-parse", "HEAD").decode().strip()
    truth = json.loads(git(repo, "show", "HEAD:ground-truth.json"))
    listing = [line.split() for line in git(repo, "ls-tree", "-l", "HEAD", "html/").decode().splitlines()]
    eligible = [row for row in sorted(listing, key=lambda row: row[4])
                if int(row[3]) <= AEB_MAX_GZ and Path(row[4]).name.removesuffix(".html.gz") in truth]
    for _mode, _type, _blob, _size, path in eligible[AEB_SKIP:AEB_SKIP + AEB_TAKE]:
        key = Path(path).name.removesuffix(".html.gz")
        body = [p.strip() for p in truth[key]["articleBody"].split("\n") if len(p.strip()) >= 20]
        name = f"aeb-{key[:16]}.html.gz"
        (pages / name).write_bytes(git(repo, "show", f"HEAD:{path}"))
        manifest.append({"file": f"pages/{name}", "repository": "scrapinghub/article-extraction-benchmark",
                         "commit": commit, "path": path, "licence": "MIT (repository); page content: its site's",
                         "url": truth[key].get("url"), "reference": "ground-truth.json articleBody",
                         "first": body[0] if body else None, "last": body[-1] if body else None,
                         "title": None, "published": None})
    return manifest


def main(mirrors: str) -> None:
    pages = HERE / "pages"
    pages.mkdir(exist_ok=True)
    manifest = {"listings": build_listings(Path(mirrors), pages), "articles": build_articles(Path(mirrors), pages)}
    (HERE / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"{len(manifest['listings'])} listing pages, "
          f"{sum(len(p['entries']) for p in manifest['listings'])} expected entries; "
          f"{len(manifest['articles'])} article pages")


if __name__ == "__main__":
    main(*sys.argv[1:])
