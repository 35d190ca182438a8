"""Rendering a digest: Jinja2 templates (overridable), nh3-sanitised source HTML, inlined CSS."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from zoneinfo import ZoneInfo

import css_inline
import nh3
from jinja2 import ChoiceLoader, FileSystemLoader, PackageLoader, StrictUndefined, TemplateError, select_autoescape
from jinja2.sandbox import SandboxedEnvironment
from markupsafe import Markup

from digest.settings import DigestSettings

KIND_ORDER = ("new", "updated", "restored", "removed")
# What a subscriber's mail client may see of a watched site's HTML: text structure and links.
ALLOWED_TAGS = {"p", "a", "em", "strong", "b", "i", "br", "ul", "ol", "li", "blockquote", "h3", "h4"}
ALLOWED_ATTRIBUTES = {"a": {"href"}}
# A feed entry also marks an edit's changed words.
FEED_TAGS = ALLOWED_TAGS | {"ins", "del"}
LEAD_CHARS = 600


class TemplateProblem(ValueError):
    """A template that cannot be rendered (syntax, an undefined name, or an operation the
    sandbox refuses); str() is one line naming the template file."""


@dataclass
class RenderedDigest:
    subject: str
    html: str
    text: str


@lru_cache(maxsize=8)
def environment(templates_dir: str | None) -> SandboxedEnvironment:
    # Sandboxed: an operator's template (templates_dir) may show and format the digest's data,
    # but cannot reach Python internals (__globals__, __subclasses__, os) to run code.
    loaders = [PackageLoader("digest", "templates")]
    if templates_dir:
        loaders.insert(0, FileSystemLoader(templates_dir))
    env = SandboxedEnvironment(loader=ChoiceLoader(loaders), autoescape=select_autoescape(["html", "j2.html", "html.j2"]),
                               undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    return env


def sanitize(html: str | None, tags: set[str] = ALLOWED_TAGS) -> str:
    """Source HTML as it may appear in an email: no script, style, iframe, form, event handler,
    javascript:/data: URL or CSS; links open as plain https/http/mailto."""
    if not html:
        return ""
    return nh3.clean(html, tags=tags, attributes=ALLOWED_ATTRIBUTES, url_schemes={"http", "https", "mailto"},
                     link_rel="noopener noreferrer", strip_comments=True)


def lead_html(body_html: str | None, limit: int = LEAD_CHARS) -> str:
    """The first paragraphs of a post, sanitised, about `limit` characters of text."""
    clean = sanitize(body_html)
    if not clean:
        return ""
    from parsel import Selector

    parts, size = [], 0
    for node in Selector(text=f"<div>{clean}</div>", type="html").css("div > p, div > ul, div > ol, div > blockquote, div > h3, div > h4"):
        text = " ".join(node.css("::text").getall())
        if not text.strip():
            continue
        parts.append(node.get())
        size += len(text)
        if size >= limit:
            break
    return sanitize("".join(parts)) if parts else ""


def excerpt_of(event, limit: int = 300) -> str:
    text = event.summary or ""
    if not text and event.body_html:
        from parsel import Selector

        text = " ".join(" ".join(Selector(text=sanitize(event.body_html), type="html").css("::text").getall()).split())
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rsplit(" ", 1)[0] + "…"


def _date(value: datetime | None, zone: ZoneInfo) -> str:
    if value is None:
        return ""
    local = value.astimezone(zone)
    return f"{local.day} {local:%B %Y}"


def subject_for(events, settings: DigestSettings) -> str:
    counts = {kind: sum(1 for e in events if e.kind == kind) for kind in KIND_ORDER}
    parts = [f"{n} {kind}" for kind, n in counts.items() if n]
    names = []
    for event in events:
        title = settings.source_titles.get(event.source, event.source)
        if title not in names:
            names.append(title)
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    subject = f"{', '.join(parts)} — {shown}"
    return " ".join(subject.split())[:180]


def _cadence_text(subscriber) -> str:
    return {"immediate": "after each check", "weekly": "weekly"}.get(getattr(subscriber, "cadence", "daily"), "daily")


def render_digest(subscriber, events, settings: DigestSettings, now: datetime, unsubscribe_url: str) -> RenderedDigest:
    zone = ZoneInfo(getattr(subscriber, "timezone", None) or settings.timezone)
    by_source: dict[str, list] = {}
    for event in events:
        by_source.setdefault(event.source, []).append(event)
    groups = []
    for source, items in by_source.items():
        items = sorted(items, key=lambda e: (e.published or e.created_at), reverse=True)
        groups.append({
            "title": settings.source_titles.get(source, source),
            "posts": [{
                "kind": e.kind, "title": " ".join(e.title.split()), "url": e.url,
                "date": _date(e.published, zone), "excerpt": excerpt_of(e),
                "lead_html": Markup(lead_html(e.body_html)) if e.kind in ("new", "restored") else "",
                "diff": e.diff if e.kind == "updated" else None,
            } for e in items],
        })
    subject = subject_for(events, settings)
    context = {
        "subject": subject, "headline": subject.split(" — ")[0].capitalize() if events else subject,
        "groups": groups, "site_name": settings.site_name, "generated": f"{now.astimezone(zone):%-d %B %Y}",
        "email": subscriber.email, "unsubscribe_url": unsubscribe_url, "cadence_text": _cadence_text(subscriber),
    }
    html = css_inline.inline(_render(settings, "digest.html.j2", context))
    text = _render(settings, "digest.txt.j2", context)
    return RenderedDigest(subject=subject, html=html, text=text)


def render_change(event, settings) -> str:
    """One event as the HTML of a feed entry, sanitised like the digest's: an edit's diff, the
    lead of a new or restored post, else its excerpt. `settings` needs only `templates_dir`."""
    lead = Markup(lead_html(event.body_html)) if event.kind in ("new", "restored") else ""
    diff = event.diff if event.kind == "updated" else None
    html = _render(settings, "feed_entry.html.j2", {
        "kind": event.kind, "diff": diff, "lead_html": lead,
        "excerpt": "" if diff or lead else excerpt_of(event),
    })
    return sanitize(html, FEED_TAGS)


def render_page(title: str, message: str, form_token: str | None, settings: DigestSettings) -> str:
    return _render(settings, "unsubscribe.html.j2", {"title": title, "message": message, "form_token": form_token})


def _render(settings: DigestSettings, name: str, context: dict) -> str:
    env = environment(str(settings.templates_dir) if settings.templates_dir else None)
    template = None
    try:
        template = env.get_template(name)
        return template.render(**context)
    except TemplateError as exc:
        where = getattr(exc, "filename", None) or (template.filename if template else None) or name
        line = f", line {exc.lineno}" if getattr(exc, "lineno", None) else ""
        raise TemplateProblem(f"template {where}{line}: {' '.join(str(exc).split())}") from None
