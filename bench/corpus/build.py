"""Rebuild bench/corpus/ from local snapshots of the two source repositories (bare git dirs).

    python bench/corpus/build.py /path/to/adbar+trafilatura.git /path/to/scrapinghub+article-extraction-benchmark.git

Writes pages/*.html.gz and manifest.json (source repository, commit, path, licence, URL and the
reference: `with`/`without` snippets for trafilatura's evaluation pages, `articleBody` for the
benchmark's). Nothing here is imported by postwatch.
"""
from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
BLOGLIKE = re.compile(r"blog|/20[012]\d/\d\d/")
BENCH_PAGES = 25            # the first pages (by file name) of the benchmark under BENCH_MAX_GZ bytes
BENCH_MAX_GZ = 60_000


def git(repo: str, *args: str) -> bytes:
    return subprocess.run(["git", "--git-dir", repo, *args], check=True, capture_output=True).stdout


def main(trafilatura: str, benchmark: str) -> None:
    pages = HERE / "pages"
    pages.mkdir(exist_ok=True)
    manifest = []
    commit = git(trafilatura, "rev-parse", "HEAD").decode().strip()
    evaldata = json.loads(git(trafilatura, "show", "HEAD:tests/evaldata.json"))
    cached = set(git(trafilatura, "ls-tree", "--name-only", "HEAD", "tests/cache/").decode().split())
    for url, ref in evaldata.items():
        path = f"tests/cache/{ref['file']}"
        if not BLOGLIKE.search(url) or path not in cached:
            continue
        name = "trafilatura-" + re.sub(r"[^A-Za-z0-9.-]+", "_", ref["file"]) + ".gz"
        (pages / name).write_bytes(gzip.compress(git(trafilatura, "show", f"HEAD:{path}"), mtime=0))
        manifest.append({"file": f"pages/{name}", "repository": "adbar/trafilatura", "commit": commit,
                         "path": path, "licence": "Apache-2.0 (repository); page content: its site's",
                         "url": url.removeprefix("hard::"), "with": ref.get("with", []),
                         "without": ref.get("without", [])})
    commit = git(benchmark, "rev-parse", "HEAD").decode().strip()
    truth = json.loads(git(benchmark, "show", "HEAD:ground-truth.json"))
    listing = [line.split() for line in git(benchmark, "ls-tree", "-l", "HEAD", "html/").decode().splitlines()]
    taken = 0
    for _mode, _type, _blob, size, path in sorted(listing, key=lambda row: row[4]):
        key = Path(path).name.removesuffix(".html.gz")
        if int(size) > BENCH_MAX_GZ or key not in truth or taken >= BENCH_PAGES:
            continue
        taken += 1
        name = f"aeb-{key[:16]}.html.gz"
        (pages / name).write_bytes(git(benchmark, "show", f"HEAD:{path}"))
        manifest.append({"file": f"pages/{name}", "repository": "scrapinghub/article-extraction-benchmark",
                         "commit": commit, "path": path, "licence": "MIT (repository); page content: its site's",
                         "url": truth[key].get("url"), "articleBody": truth[key]["articleBody"]})
    (HERE / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"{len(manifest)} pages")


if __name__ == "__main__":
    main(*sys.argv[1:3])
