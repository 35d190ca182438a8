"""A generic post page's body (crawler.maintext) on real pages of bench/corpus: what trafilatura's
precision mode drops from inside the article comes back, what it keeps out stays out."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

from crawler.maintext import main_text_html
from state.normalize import paragraphs_of

CORPUS = Path(__file__).resolve().parent.parent / "bench" / "corpus"
MANIFEST = {entry["file"]: entry for entry in json.loads((CORPUS / "manifest.json").read_text(encoding="utf-8"))}


def body_of(file: str) -> list[str]:
    html = gzip.decompress((CORPUS / file).read_bytes()).decode("utf-8", "replace")
    return paragraphs_of(main_text_html(html, MANIFEST[file]["url"]) or "")


def test_a_letter_whose_first_sentences_sit_in_a_table_cell_before_its_line_breaks_keeps_them():
    # uCoz blog: the post is one table cell, "Es war gesagt, ... gekränkt hat.<br>Heute werde ..."
    body = " ".join(body_of("pages/trafilatura-schleifen.ucoz.de.briefe.html.gz"))
    assert "Es war gesagt, falls du zornig bist, sollst du einen Brief schreiben." in body
    assert body.index("Es war gesagt") < body.index("Heute werde es starten")


def test_a_paragraph_between_two_kept_ones_is_not_lost():
    body = body_of("pages/aeb-287e4d9f4af31733.html.gz")
    laptop = [p for p in body if p.startswith("This is an outstanding price for a GTX 1660 Ti equipped laptop.")]
    assert len(laptop) == 1


def test_a_comment_bar_the_default_reading_takes_stays_out_of_the_body():
    body = " ".join(body_of("pages/trafilatura-gregoryszorc.com.python3.html.gz"))
    assert "View Comments" not in body
    assert "Mercurial" in body
