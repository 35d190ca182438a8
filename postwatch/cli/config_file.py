"""`postwatch config`: validate the config file, or print a commented example of it."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from postwatch.cli.common import Commands, command, group
from postwatch.config import Config
from postwatch.findings import config_findings

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "postwatch.toml"


def add_parser(commands: Commands) -> None:
    actions = group(commands, "config", "validate the config or print an example")
    command(actions, "check", check_config, "validate the config file; one line per problem, exit status 2 on any")
    command(actions, "example", print_example_config, "print a commented example config", reads_config=False)


def check_config(args: argparse.Namespace, config: Config) -> int:
    where = config.path or "built-in defaults (no config file)"
    problems, dkim_line = config_findings(config)
    for line in problems:
        print(f"postwatch: {line}", file=sys.stderr)
    if problems:
        return 2
    delivery = config.describe_delivery()
    if config.delivery_channel == "smtp":
        delivery += f", MAIL FROM {config.envelope_sender}, unsubscribe {config.unsubscribe_url}, {dkim_line}"
    print(f"{where}: ok — {len(config.sources)} sources, database {config.database}, {delivery}")
    return 0


def print_example_config(args: argparse.Namespace, config: Config) -> int:
    print(EXAMPLE.read_text(encoding="utf-8"), end="")
    return 0
