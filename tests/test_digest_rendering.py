"""The digest as a phone and a desktop browser show it: headless Chromium, real layout."""
from __future__ import annotations

import dataclasses
import re
from datetime import timedelta
from pathlib import Path

import pytest
from markupsafe import escape

from crawler.items import PostItem
from digest.compose import build_message
from digest.render import HTML_BUDGET
from digest.settings import DigestSettings
from support.browser import CHROMIUM, measure_in_frame
from digests import NOW, SEEDS, SETTINGS, event, hostile_events, parts
from state import CheckInput, SourceRecord, Store
from state.diff import paragraph_diff

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
# Headless Chromium will not make a window narrower than 500 px, so the digest is laid out in an
# iframe of the width under test (srcdoc keeps it same-origin, so the page can measure it).
FRAME = """<!DOCTYPE html><html><body style="margin:0">
<iframe id="mail" style="border:0;display:block" width="{width}" height="1400" srcdoc="{srcdoc}"></iframe>
<script>
document.getElementById("mail").addEventListener("load", function () {{
  var doc = this.contentDocument.documentElement;
  document.title = JSON.stringify({{scroll: doc.scrollWidth, view: this.contentWindow.innerWidth}});
}});
</script></body></html>"""


def digest_html(tmp_path) -> str:
    store = Store(str(tmp_path / "state.db"))
    store.sync_sources([SourceRecord(name="link", url="https://libertyinnorthkorea.org/blog", kind="link")])
    base = [PostItem(url=f"https://libertyinnorthkorea.org/blog/p{n}", title=f"Post {n}", published=NOW,
                     body_html=f"<p>Original paragraph of post {n} about refugees reaching safety.</p><p>Second.</p>",
                     summary=None, origin="page") for n in range(10)]
    store.apply_check("link", CheckInput(posts=base, baseline=True), NOW)
    subscriber = store.add_subscriber("ada@example.org", timezone="Asia/Seoul")
    long_url = "https://libertyinnorthkorea.org/blog/" + "a-very-long-slug-without-any-break-" * 6
    fresh = [PostItem(url=long_url, title="Supercalifragilisticexpialidocious" * 3, published=NOW,
                      body_html="<p>" + "Unbreakable" * 40 + "</p><p><img src='https://x.example/big.jpg' width='2000'></p>",
                      summary=None, origin="page"),
             PostItem(url="https://libertyinnorthkorea.org/blog/p-new", title="Twelve refugees reach freedom", published=NOW,
                      body_html="<p>A normal paragraph.</p>", summary=None, origin="page")]
    edited = base[:]
    edited[2] = PostItem(url=base[2].url, title="Post 2", published=NOW,
                         body_html="<p>Original paragraph of post 2 about refugees reaching safety and freedom.</p><p>Second.</p>",
                         summary=None, origin="page")
    store.apply_check("link", CheckInput(posts=fresh + edited), NOW)
    store.apply_check("link", CheckInput(posts=edited), NOW)      # the edit is published when seen again
    store.release_source("link")
    events = store.pending_events(subscriber)
    assert {e.kind for e in events} == {"new", "updated"}
    settings = DigestSettings(secret=b"k", source_titles={"link": "Liberty in North Korea"})
    message = build_message(subscriber, events, settings, NOW)
    from email import message_from_bytes, policy

    html = message_from_bytes(message.raw, policy=policy.default).get_body(("html",)).get_content()
    store.close()
    return html


def render(html: str, width: int, folder: Path, name: str) -> dict:
    return measure_in_frame(FRAME, html, width, folder, ARTIFACTS / f"digest-{name}.png")


def hostile_html(tmp_path) -> str:
    return parts(hostile_events())[1]


@pytest.mark.parametrize("width", [375, 1024])
@pytest.mark.parametrize("digest", [digest_html, hostile_html], ids=["ordinary", "hostile"])
def test_the_digest_has_no_horizontal_overflow(tmp_path, width, digest):
    if CHROMIUM is None:
        pytest.fail("Debian's chromium is needed for this test (.ci/run installs it: apt-get install chromium)")
    measured = render(digest(tmp_path), width, tmp_path, f"{digest.__name__.split('_')[0]}-{width}px")
    assert measured["view"] == width
    assert measured["scroll"] <= measured["view"], measured
    assert measured["screenshot"].stat().st_size > 5000


# ------------------------------------------------------------------------------------------
# What a reader's mail client gets: never clipped, hostile text defused, a text part that
# says what the HTML says.
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("count", [100, 200, 1000])
def test_a_big_digest_stays_under_the_size_budget_with_its_unsubscribe_links(count):
    message, html, text, link = parts([event(n) for n in range(1, count + 1)])
    assert len(html.encode()) < HTML_BUDGET <= 90 * 1024
    footer = html.rsplit('class="footer"', 1)[1]
    assert str(escape(link)) in footer and str(escape(link)) in html.split("<h2", 1)[0]      # footer and top
    full = html.count('class="post"')
    brief = len(re.findall(r'<li dir="auto"><a href="https://libertyinnorthkorea.org/blog/', html))
    assert full == SETTINGS.full_posts and full + brief == SETTINGS.max_posts      # the rest in one line each
    shown = full + brief
    more = f"And {count - shown} more new posts on Liberty in North Korea"
    # The pages have a public address: the rest are on the source's archive page...
    assert f'<a href="https://watch.example.org/archive/link/">{more}</a>' in html
    assert f"{more}: https://watch.example.org/archive/link/" in text and link in text
    assert message["Subject"].startswith(f"{count} new")
    # ...else on the blog's own index.
    _, html, text, _ = parts([event(n) for n in range(1, count + 1)], dataclasses.replace(SETTINGS, archive_public=False))
    assert f'<a href="https://libertyinnorthkorea.org/blog">{more}</a>' in html
    assert f"{more}: https://libertyinnorthkorea.org/blog" in text


def _edit(n: int) -> dict:
    return {"title": None, "paragraphs": [{"op": "changed", "text": f"Edited paragraph {n}",
                                           "words": [["equal", "Paragraph "], ["insert", f"edited {n}"]]}],
            "truncated": False}


@pytest.mark.parametrize("new, updated, removed", [(165, 5, 1), (0, 90, 0), (300, 150, 20)])
def test_a_big_digest_never_drops_an_edit_or_a_removal(new, updated, removed):
    """Only new posts (which the blog's own index lists) are cut for size: every edit and removal
    is in the mail, in full while the budget allows and in one line each after that."""
    events = [event(n) for n in range(1, new + 1)]
    events += [event(1000 + n, kind="updated", title=f"Edited post {n}", diff=_edit(n)) for n in range(updated)]
    events += [event(2000 + n, kind="removed", title=f"Removed post {n}") for n in range(removed)]
    message, html, text, link = parts(events)
    assert len(html.encode()) < HTML_BUDGET
    for n in range(updated):
        assert f">Edited post {n}</a>" in html and f"Edited post {n}" in text
        assert f"https://libertyinnorthkorea.org/blog/{SEEDS[(1000 + n) % len(SEEDS)].slug}-{1000 + n}" in text
    for n in range(removed):
        assert f"Removed post {n}" in html and f"Removed post {n}" in text
    full = html.count('class="post"')
    kinds_in_full = re.findall(r'class="post">.*?badge b-(\w+)', html, flags=re.S)
    assert kinds_in_full[:min(full, updated + removed)] == ["updated"] * min(full, updated) + ["removed"] * min(max(0, full - updated), removed)
    shown_new = kinds_in_full.count("new") + len(re.findall(r'<li dir="auto"><a href=', html))     # in one line past full_posts
    if new > shown_new:
        assert f"And {new - shown_new} more new posts on Liberty in North Korea" in text
    else:
        assert "more new post" not in text
    assert "more posts" not in html


def test_the_inbox_preview_shows_titles_changes_first_not_the_unsubscribe_line():
    events = [event(n) for n in range(1, 40)] + [event(99, kind="updated", title="Edited post", diff=_edit(1))]
    message, html, text, link = parts(events)
    body = re.split(r"<body[^>]*>", html, maxsplit=1)[1]
    preheader = re.match(r'\s*<div class="preheader" style="display:none;[^"]*">([^<]*)</div>', body)
    assert preheader, body[:300]
    shown = preheader.group(1).replace("&nbsp;", "").replace("\u034f", "").strip()
    assert shown.startswith("Edited post · ") and len(shown) <= 140
    assert "Unsubscribe" not in shown


@pytest.mark.parametrize("joined_via, says", [("page", "subscribed to"), ("cli", "was added to the list of"),
                                              ("import", "was added to the list of")])
def test_the_footer_says_how_the_reader_came_to_be_on_the_list(joined_via, says):
    import dataclasses
    from email import message_from_bytes, policy

    from digests import Reader

    reader = dataclasses.replace(Reader(), joined_via=joined_via)
    message = message_from_bytes(build_message(reader, [event(1)], SETTINGS, NOW).raw, policy=policy.default)
    html, text = (message.get_body((kind,)).get_content() for kind in ("html", "plain"))
    expected = f"because reader@example.org {says} postwatch."
    assert expected in " ".join(text.split()) and expected in " ".join(re.sub("<[^>]+>", "", html).split())


def test_a_posts_text_carries_its_blogs_language_in_a_korean_readers_digest():
    """[[sources]] lang: a screen reader reading a Korean digest reads an English post's title and
    lead in English; the digest's own words (the badge, "Read more") stay the reader's."""
    import dataclasses
    from email import message_from_bytes, policy

    from digests import Reader

    settings = dataclasses.replace(SETTINGS, source_langs={"link": "en"})
    korean = dataclasses.replace(Reader(), lang="ko")
    message = message_from_bytes(build_message(korean, [event(1)], settings, NOW).raw, policy=policy.default)
    html = message.get_body(("html",)).get_content()
    assert re.search(r'<h3 dir="auto" lang="en">', html) and re.search(r'<div class="lead" lang="en">', html)
    assert re.search(r'<a class="read-more"[^>]* lang="ko"', html)
    english = message_from_bytes(build_message(Reader(), [event(1)], settings, NOW).raw, policy=policy.default)
    assert 'lang="en">' not in english.get_body(("html",)).get_content().split("<body", 1)[1]   # same language: nothing to say


def test_a_change_says_when_it_was_seen_and_a_removed_post_links_to_its_last_kept_version_not_its_404():
    truncated = {**_edit(1), "truncated": True}
    edited = event(5, kind="updated", title="Edited post", diff=truncated)
    edited.created_at = NOW + timedelta(days=3)
    removed = event(6, kind="removed", title="Gone post")
    message, html, text, link = parts([edited, removed])
    assert "updated 5 November 2026" in html and "updated 5 November 2026" in text
    # A folded diff links to the whole of it on the digest's web page; without public pages, to the post.
    # Its accessible name says which post's changes it opens (issue 33: link text that says where it goes).
    assert ('<a href="https://watch.example.org/archive/d/5-6#e5" aria-label="every change, online: Edited post">'
            '… every change, online</a>') in html
    assert "… every change, online: https://watch.example.org/archive/d/5-6#e5" in text
    # A removed post links to the archive's page of that removal, which shows the last version kept.
    assert f'href="{removed.url}"' not in html
    assert '<a href="https://watch.example.org/archive/d/6#e6">Gone post</a>' in html
    assert "The last version kept: https://watch.example.org/archive/d/6#e6" in text
    _, html, text, _ = parts([edited, removed], dataclasses.replace(SETTINGS, archive_public=False))
    assert (f'<a href="{edited.url}" aria-label="more changes on the page: Edited post">… more changes on the page</a>'
            in html)
    # Without public pages there is no copy to link to: the title alone.
    assert '<h3 dir="auto">Gone post</h3>' in html and "The last version kept" not in text


def test_a_hostile_digest_stays_under_the_budget_and_is_defused():
    message, html, text, link = parts(hostile_events())
    assert len(html.encode()) < HTML_BUDGET and str(escape(link)) in html.rsplit('class="footer"', 1)[1]
    for hidden in ("\u202e", "\u2067", "\u2069"):
        assert hidden not in html + text + message["Subject"]
    assert "Refundfdp.exe" in html and "Refundfdp.exe" in text
    # A link whose text names another host than its target loses its target; an honest one keeps it.
    assert "evil.example" not in html and "https://www.paypal.com/signin" in html
    assert '<a href="https://libertyinnorthkorea.org/donate"' in html
    assert "T" * 201 not in html and "W" * 81 not in html and "W" * 80 + "…" in html
    lead = html.split("A long paragraph.", 1)[1].split("</p>", 1)[0]
    assert len(lead) < 700                                   # 108 KB of paragraph, cut near LEAD_CHARS
    assert '<h3 dir="auto">' in html and '<p dir="auto">هذه فقرة' in html


def test_repeated_styles_are_not_repeated_per_post():
    small, large = (parts([event(n) for n in range(1, count + 1)])[1] for count in (10, 40))
    assert small.count("style=") == large.count("style=")     # inline styles only on the once-per-digest frame
    assert "<style" in large and "prefers-color-scheme: dark" in large and 'name="color-scheme"' in large
    per_post = (len(large.encode()) - len(small.encode())) / 30
    assert per_post < 1100, per_post                       # 1,825 bytes before the <style> block


def _luminance(colour: str) -> float:
    channels = [int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5)]
    r, g, b = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def _contrast(a: str, b: str) -> float:
    high, low = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def test_text_colours_have_enough_contrast_and_changes_read_without_colour():
    diff = paragraph_diff(["Twelve refugees reached safety.", "Kept.", "Gone."], ["Fifteen refugees reached safety.", "Kept.", "New."])
    _, html, _, _ = parts([event(1), event(2, kind="updated", diff=diff), event(3, kind="removed")])
    styles = " ".join(re.findall(r"<style[^>]*>(.*?)</style>", html, re.S))
    light = styles.split("@media (prefers-color-scheme: dark)")[0]
    rules = re.findall(r"([^{}]+)\{([^{}]*)\}", light)
    checked = 0
    for selector, body in rules:
        colour = re.search(r"(?<![-\w])color:\s*(#[0-9a-f]{6})", body)
        if colour:
            background = re.search(r"background:\s*(#[0-9a-f]{6})", body)
            against = background.group(1) if background else "#ffffff"
            assert _contrast(colour.group(1), against) >= 4.5, (selector.strip(), colour.group(1), against)
            checked += 1
    for selector, body in re.findall(r"([^{}]+)\{([^{}]*)\}", styles.split("prefers-color-scheme: dark)", 1)[1]):
        colour = re.search(r"(?<![-\w])color:\s*(#[0-9a-f]{6})", body)
        if colour:
            assert _contrast(colour.group(1), "#1c1c1a") >= 4.5, (selector.strip(), colour.group(1))
            checked += 1
    assert checked >= 10
    assert re.search(r"ins \{[^}]*text-decoration: underline", styles) and re.search(r"del \{[^}]*line-through", styles)
    assert "<b>Added:</b> New." in html and "<b>Removed:</b> <del>Gone.</del>" in html and "<b>Changed:</b>" in html
    assert re.search(r'<span class="badge b-new"[^>]*>new</span> · \d', html)      # "new · 2 November", not "new2 November"


def test_the_text_part_carries_what_the_html_carries():
    diff = paragraph_diff(["Old first paragraph about the journey.", "Kept."],
                          ["New first paragraph about the long journey.", "Kept."] + [f"Added paragraph {n}. " * 30 for n in range(20)],
                          "Old title", "New title")
    _, html, text, link = parts([event(1), event(2, kind="updated", title="New title", diff=diff)])
    assert "… every change, online</a>" in html
    assert "… every change, online: https://watch.example.org/archive/d/1-2#e2" in text
    assert "View in browser: https://watch.example.org/archive/d/1-2\n" in text
    # Each changed paragraph on lines of its own, a blank line before what follows.
    assert "\n\n  ~ Changed: [-Old-][+New+] first paragraph about the [+long +]journey.\n\n  + Added: Added paragraph 0." in text
    assert "\n\n  Title was: Old title\n" in text
    assert "\n-- \n" in text and text.index("\n-- \n") < text.index(link)
    assert "PO Box 8028, Long Beach, CA 90808, USA" in text and "PO Box 8028, Long Beach, CA 90808, USA" in html
    assert "You get this digest daily because reader@example.org subscribed" in " ".join(text.split())
    lead = SEEDS[1].body_paragraphs[0][:60]
    assert lead in html and lead in " ".join(text.split())               # the lead, not a shorter excerpt
    for line in text.splitlines():
        assert len(line) <= 78 or re.fullmatch(r"\s*([\w …]+: )?\S+://\S+", line), line


def test_a_link_loses_its_target_only_when_its_text_names_another_host():
    body = ('<p>Write to <a href="mailto:info@libertyinnorthkorea.org">info@libertyinnorthkorea.org</a>, read '
            '<a href="https://www.libertyinnorthkorea.org/blog">libertyinnorthkorea.org/blog</a> or '
            '<a href="https://libertyinnorthkorea.org/donate">our donation page</a>; not '
            '<a href="https://evil.example/login">https://bank.example/login</a> or '
            '<a href="mailto:harvest@evil.example">help@libertyinnorthkorea.org</a>.</p>')
    _, html, _, _ = parts([event(1, body=body)])
    lead = html.split('<div class="lead">', 1)[1].split("</div>", 1)[0]
    assert lead.count("<a ") - lead.count('class="read-more"') == 3 and "evil.example" not in html
    assert "https://bank.example/login" in lead and "help@libertyinnorthkorea.org" in lead      # the words stay


def test_every_digest_footer_links_to_the_preferences_page_within_the_size_budget():
    import dataclasses
    from email import message_from_bytes, policy

    from digest.compose import build_message
    from digest.tokens import verify_token
    from digests import Reader

    SUBSCRIBER = Reader()
    settings = dataclasses.replace(SETTINGS, preferences_base_url="https://watch.example.org/preferences")
    message = message_from_bytes(build_message(SUBSCRIBER, [event(n) for n in range(1, 1001)], settings, NOW).raw,
                                 policy=policy.default)
    html = message.get_body(("html",)).get_content()
    text = message.get_body(("plain",)).get_content()
    assert len(html.encode()) < HTML_BUDGET
    link = re.search(r"Change what you get: (\S+)", text).group(1)
    assert link.startswith("https://watch.example.org/preferences?token=")
    assert re.search(f'<a href="{re.escape(str(escape(link)))}"[^>]*>change what you get</a>', html.rsplit('class="footer"', 1)[1])
    token = link.split("token=", 1)[1]
    assert verify_token(token, settings.secret, lambda _: SUBSCRIBER, purpose="preferences") == SUBSCRIBER.id
    assert verify_token(token, settings.secret, lambda _: SUBSCRIBER) is None          # not an unsubscribe link
    # No listener reads a mailto: with none configured, only the one-click https link is advertised.
    assert "mailto:" not in str(message["List-Unsubscribe"]) and str(message["List-Unsubscribe"]).startswith("<https://")


# ------------------------------------------------------------------------------------------
# Scannable: a summary at the top, short leads with "Read more", the full lead as a setting.
# ------------------------------------------------------------------------------------------

def test_a_digest_of_more_than_five_items_starts_with_a_summary_linked_to_its_sections():
    events = [event(n) for n in range(1, 5)] + [event(10 + n, source="other") for n in range(3)]
    events.append(event(20, kind="updated", title="Edited post", diff=_edit(1)))
    settings = DigestSettings(**{**SETTINGS.__dict__, "source_titles": {**SETTINGS.source_titles, "other": "Other blog"}})
    _, html, text, _ = parts(events, settings)
    summary = html.split('<ul class="summary">', 1)[1].split("</ul>", 1)[0]
    assert re.search(r'<a href="#s1"[^>]*>Liberty in North Korea</a>: 1 updated, 4 new', summary)
    assert re.search(r'<a href="#s2"[^>]*>Other blog</a>: 3 new', summary)
    assert '<h2 id="s1"' in html and '<h2 id="s2"' in html
    assert html.index('class="summary"') < html.index('<h2 id="s1"')
    assert "* Liberty in North Korea: 1 updated, 4 new" in text and "* Other blog: 3 new" in text
    # Five items or fewer: no summary.
    _, small, small_text, _ = parts(events[:5])
    assert 'class="summary"' not in small and "* Liberty in North Korea:" not in small_text


@pytest.mark.parametrize("sentences, expected", [
    # Sentences that fit: cut after the last whole one.
    (["Liberty in North Korea welcomes Sarah Yun as our new Chief Regional Officer for South Korea.",
      "She brings fifteen years of work for human rights in North Korea and across Asia to the role.",
      "Refugees consistently tell us that getting outside information into North Korea is crucial for change."],
     "Liberty in North Korea welcomes Sarah Yun as our new Chief Regional Officer for South Korea. She brings "
     "fifteen years of work for human rights in North Korea and across Asia to the role."),
    # One long sentence: cut at a word, with an ellipsis.
    (["word " * 80], None),
])
def test_a_short_lead_is_two_or_three_lines_cut_at_a_sentence_with_read_more(sentences, expected):
    from digest.render import SHORT_LEAD_CHARS

    body = "<p>" + " ".join(sentences) + "</p><p>A second paragraph that a short lead leaves out.</p>"
    post = event(1, body=body)
    _, html, text, _ = parts([post])
    lead = html.split('<div class="lead">', 1)[1].split("</div>", 1)[0]
    shown = re.sub("<[^>]+>", "", lead.split('<a class="read-more"', 1)[0]).strip()
    assert len(shown) <= SHORT_LEAD_CHARS + 1
    assert shown == expected if expected else shown.endswith("…")
    # "Read more" names the post it opens, in an aria-label (a mail client drops a hiding class).
    link = re.search(r'<a class="read-more"([^>]*)>Read more</a></p>', lead)
    assert link and f'href="{post.url}"' in link.group(1), lead[-400:]
    assert f'aria-label="Read more: {post.title}"' in link.group(1)
    assert "A second paragraph" not in html and "A second paragraph" not in text
    # [digest] lead = "full": the first paragraphs up to 600 characters, no "Read more".
    full = DigestSettings(**{**SETTINGS.__dict__, "lead": "full"})
    _, html, text, _ = parts([post], full)
    assert "A second paragraph" in html and "A second paragraph" in text and "Read more" not in html


def test_the_lead_setting_is_validated_and_documented(tmp_path):
    from postwatch.config import ConfigError, load_config

    example = Path(__file__).resolve().parent.parent / "postwatch" / "examples" / "postwatch.toml"
    assert re.search(r"^lead = \"short\" .*\"full\"", example.read_text(), re.M | re.S)
    path = tmp_path / "postwatch.toml"
    path.write_text('[digest]\nlead = "full"\n')
    assert load_config(path).digest.lead == "full"
    path.write_text('[digest]\nlead = "long"\n')
    with pytest.raises(ConfigError, match=r"\[digest\] lead must be short or full, not 'long'"):
        load_config(path)
