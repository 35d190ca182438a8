"""The operator's console (issue 34): server-rendered pages, served by aiohttp on the daemon's own
event loop on `[console] listen`, an address of its own (never the public pages' [daemon] listen).

- auth.py   passwords (Argon2id), session ids, the trusted proxy header (the sign-in throttle
            counts in the database: state/operators.py)
- pages.py  the aiohttp application: sign-in, dashboard, sources, subscribers, deliveries,
            settings; every POST needs a signed-in admin and the session's CSRF token
- serving.py  the console beside a cluster worker (`postwatch worker`), where no daemon serves it
- templates/  Jinja2, autoescaped; no JavaScript: every action is a plain form
"""
