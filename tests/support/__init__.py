"""Helpers only the tests and bench/ use, kept out of the wheel: the cluster trials and their
assertions (`cluster`), a farm of replica blogs in a process of its own (`farm`), a webhook
receiver that checks every signature (`webhook_receiver`), headless Chromium's measurements
(`browser`), and a server that answers one byte at a time (`drip`). The tests import them as
`support.<module>` (tests/ is on sys.path under pytest); bench scripts put tests/ on sys.path
first. What `postwatch demo` needs (the replica, the mail catcher) stays in postwatch.testing."""
