"""The operator's console (issue 34): server-rendered pages, served by aiohttp on the daemon's own
event loop on `[console] listen`, an address of its own (never the public pages' [daemon] listen).

- auth.py   passwords (Argon2id), session ids, sign-in throttling, the trusted proxy header
- pages.py  the aiohttp application: sign-in, dashboard, sources, subscribers, deliveries,
            settings; every POST needs a signed-in admin and the session's CSRF token
- templates/  Jinja2, autoescaped; no JavaScript: every action is a plain form
"""
