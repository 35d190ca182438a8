"""What `postwatch config check` finds beyond parsing the config: the relay's and the DKIM key's
problems. The console's settings page shows the same findings."""
from __future__ import annotations

from postwatch.config import Config
from postwatch.relay import dkim_report, relay_problems


def config_findings(config: Config) -> tuple[list[str], str]:
    """(problems, the DKIM line): one line per problem, and how digests are signed."""
    where = str(config.path or "built-in defaults (no config file)")
    dkim_line, problems = dkim_report(config, where)
    return relay_problems(config, where) + problems, dkim_line
