"""Writes the malformed-input corpus in tests/data/malformed (kept in the repo; re-run to refresh).

Each file is a feed or a listing page broken in one way seen in the wild: truncation, bad
encodings, wrong content types, entity bombs, nesting, missing fields, binary junk.
"""
from __future__ import annotations

import gzip
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent / "malformed"

GOOD_RSS = """<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/"><channel>
<title>Broken Blog</title><link>https://broken.example/</link><description>d</description>
{items}
</channel></rss>"""
ITEM = """<item><title>{title}</title><link>{link}</link><guid>{link}</guid>
<pubDate>{date}</pubDate><description>{summary}</description>
<content:encoded><![CDATA[<p>{body}</p>]]></content:encoded></item>"""

GOOD_ATOM = """<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom"><title>Broken Atom</title><id>urn:x</id>
<updated>2025-01-01T00:00:00Z</updated>{entries}</feed>"""
ENTRY = """<entry><title>{title}</title><link href="{link}"/><id>{link}</id>
<updated>{date}</updated><content type="html">&lt;p&gt;{body}&lt;/p&gt;</content></entry>"""

LISTING = """<!DOCTYPE html><html data-wf-site="x"><head><title>Blog</title></head><body>
<div class="w-dyn-list"><div class="w-dyn-items" role="list">{items}</div></div></body></html>"""
LISTING_ITEM = """<div class="w-dyn-item" role="listitem"><a href="{link}" class="blog-card-link">
<h3 class="blog-title">{title}</h3></a><div class="blog-date">{date}</div></div>"""


def rss(n=3, **overrides):
    items = "".join(ITEM.format(**{**dict(title=f"Post {i}", link=f"https://broken.example/p/{i}",
                                          date="Tue, 10 Jun 2025 04:00:00 GMT", summary="s", body=f"Body {i}"),
                                   **overrides}) for i in range(n))
    return GOOD_RSS.format(items=items)


def atom(n=3, **overrides):
    entries = "".join(ENTRY.format(**{**dict(title=f"Entry {i}", link=f"https://broken.example/e/{i}",
                                            date="2025-06-10T04:00:00Z", body=f"Body {i}"), **overrides})
                      for i in range(n))
    return GOOD_ATOM.format(entries=entries)


def listing(n=3, **overrides):
    items = "".join(LISTING_ITEM.format(**{**dict(link=f"/blog/post-{i}", title=f"Post {i}", date="April 22, 2022"),
                                           **overrides}) for i in range(n))
    return LISTING.format(items=items)


def cases() -> dict[str, bytes]:
    rnd = random.Random(20261125)
    out: dict[str, bytes] = {}
    full_rss, full_atom, full_html = rss(5), atom(5), listing(5)
    # Truncations at many points.
    for i, cut in enumerate(range(40, len(full_rss), max(1, len(full_rss) // 20))):
        out[f"feed-truncated-{i:02d}.xml"] = full_rss[:cut].encode()
    for i, cut in enumerate(range(30, len(full_atom), max(1, len(full_atom) // 12))):
        out[f"atom-truncated-{i:02d}.xml"] = full_atom[:cut].encode()
    for i, cut in enumerate(range(20, len(full_html), max(1, len(full_html) // 15))):
        out[f"listing-truncated-{i:02d}.html"] = full_html[:cut].encode()
    # Encodings.
    out["feed-latin1-declared-utf8.xml"] = rss(title="Caf\u00e9 \u00e0 P\u00e9kin").encode("latin-1")
    out["feed-invalid-utf8-bytes.xml"] = rss().encode().replace(b"Post 1", b"Post \xff\xfe\xfa 1")
    out["feed-utf16-no-bom.xml"] = rss().encode("utf-16-le")
    out["feed-nul-bytes.xml"] = rss().encode().replace(b"<item>", b"<item>\x00\x00", 2)
    out["listing-invalid-utf8.html"] = listing().encode().replace(b"Post 2", b"Post \xc3\x28 2")
    out["listing-cp1252-declared-utf8.html"] = listing(title="\u201cQuoted\u201d \u2014 dash").encode("cp1252")
    # Structure.
    out["feed-empty.xml"] = b""
    out["feed-whitespace.xml"] = b"   \n\t  "
    out["feed-html-instead.xml"] = b"<!DOCTYPE html><html><body><h1>502 Bad Gateway</h1></body></html>"
    out["feed-json-instead.xml"] = b'{"error": "rate limited"}'
    out["feed-no-items.xml"] = GOOD_RSS.format(items="").encode()
    out["feed-no-channel.xml"] = b'<?xml version="1.0"?><rss version="2.0"></rss>'
    out["feed-items-without-links.xml"] = rss(link="").encode()
    out["feed-items-without-titles.xml"] = rss(title="").encode()
    out["feed-bad-dates.xml"] = rss(date="the thirty-second of Smarch").encode()
    out["feed-future-dates.xml"] = rss(date="Tue, 10 Jun 2999 04:00:00 GMT").encode()
    out["feed-relative-links.xml"] = rss(link="/p/relative").encode()
    out["feed-javascript-links.xml"] = rss(link="javascript:alert(1)").encode()
    out["feed-unclosed-cdata.xml"] = rss().replace("]]></content:encoded>", "</content:encoded>", 1).encode()
    out["feed-undefined-entity.xml"] = rss(title="Tom &amp; Jerry &nbsp; &bogus;").encode()
    out["feed-billion-laughs.xml"] = (
        '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
        '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">'
        '<!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">]>'
        '<rss version="2.0"><channel><title>&lol4;</title><item><title>&lol4;</title><link>https://broken.example/lol</link></item></channel></rss>'
    ).encode()
    out["feed-external-entity.xml"] = (
        '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
        '<rss version="2.0"><channel><title>x</title><item><title>&xxe;</title><link>https://broken.example/xxe</link></item></channel></rss>'
    ).encode()
    out["feed-deep-nesting.xml"] = rss().replace("<title>Post 0</title>", "<title>" + "<b>" * 5000 + "x" + "</b>" * 5000 + "</title>").encode()
    out["feed-huge-title.xml"] = rss(title="A" * 200_000).encode()
    out["feed-duplicate-guids.xml"] = rss(link="https://broken.example/p/same").encode()
    out["feed-mismatched-tags.xml"] = rss().replace("</title>", "</titel>", 2).encode()
    out["feed-script-in-content.xml"] = rss(body="<script>alert(1)</script><img src=x onerror=alert(2)>").replace("<![CDATA[<p>", "<![CDATA[<p>").encode()
    out["feed-gzip-without-header.xml"] = gzip.compress(rss().encode())
    out["feed-bom-then-garbage.xml"] = b"\xef\xbb\xbf\x00\x01\x02garbage"
    out["feed-rdf-broken.xml"] = b'<?xml version="1.0"?><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><item><title>x'
    out["atom-no-entries.xml"] = GOOD_ATOM.format(entries="").encode()
    out["atom-bad-namespace.xml"] = atom().replace("http://www.w3.org/2005/Atom", "urn:not-atom").encode()
    out["atom-links-without-href.xml"] = atom().replace('<link href=', '<link hre=').encode()
    out["atom-bad-dates.xml"] = atom(date="yesterday-ish").encode()
    out["listing-empty.html"] = b""
    out["listing-no-items.html"] = LISTING.format(items="").encode()
    out["listing-no-links.html"] = listing().replace('href="', 'data-href="').encode()
    out["listing-javascript-links.html"] = listing(link="javascript:void(0)").encode()
    out["listing-mailto-links.html"] = listing(link="mailto:someone@example.org").encode()
    out["listing-offsite-links.html"] = listing(link="https://elsewhere.example/x").encode()
    out["listing-unclosed-everything.html"] = b"<html><body><div class='w-dyn-list'><div class='w-dyn-items'><div class='w-dyn-item'><a href='/blog/a'><h3>A"
    out["listing-deep-nesting.html"] = ("<html><body>" + "<div>" * 20000 + listing() + "</div>" * 10 + "</body></html>").encode()
    out["listing-huge-attribute.html"] = listing().replace('class="blog-card-link"', 'class="' + "x" * 500_000 + '"').encode()
    out["listing-binary-junk.html"] = bytes(rnd.getrandbits(8) for _ in range(4096))
    out["listing-bad-dates.html"] = listing(date="Smarch 32, 20XX").encode()
    out["listing-comment-bomb.html"] = ("<!--" * 10000 + listing()).encode()
    out["listing-null-bytes.html"] = listing().encode().replace(b"<h3", b"\x00<h3")
    out["listing-xml-instead.html"] = rss().encode()
    out["listing-js-only.html"] = b"<html><body><div id=root></div><script>render()</script></body></html>"
    # Random byte flips of good documents.
    for i in range(12):
        data = bytearray(full_rss.encode())
        for _ in range(rnd.randint(1, 40)):
            data[rnd.randrange(len(data))] = rnd.getrandbits(8)
        out[f"feed-bitflip-{i:02d}.xml"] = bytes(data)
    for i in range(8):
        data = bytearray(full_html.encode())
        for _ in range(rnd.randint(1, 40)):
            data[rnd.randrange(len(data))] = rnd.getrandbits(8)
        out[f"listing-bitflip-{i:02d}.html"] = bytes(data)
    return out


if __name__ == "__main__":
    HERE.mkdir(exist_ok=True)
    for old in HERE.iterdir():
        old.unlink()
    corpus = cases()
    for name, data in corpus.items():
        (HERE / name).write_bytes(data)
    print(f"wrote {len(corpus)} files to {HERE}")
