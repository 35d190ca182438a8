"""What every command module shares: the parser class, how a command and its --help are declared,
and how a handler fails or runs asynchronous work."""
from __future__ import annotations

import argparse
import functools
import sys
from typing import Callable

from postwatch.config import Config

# A command's handler: the parsed arguments and the config in, the exit status out.
Handler = Callable[[argparse.Namespace, Config], int]
# What add_subparsers returns: the commands (or a group's actions) that add_parser adds one to.
Commands = argparse._SubParsersAction


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse whose errors are one line: what is wrong and where the help is (subcommand
    parsers inherit the class)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


class Replaced(argparse.Action):
    """An option that became a command: using it is an error that names the command."""

    def __init__(self, option_strings, dest, *, instead: str, **kwargs):
        self.instead = instead
        super().__init__(option_strings, dest, help=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(f"{option_string} is gone; use: {self.instead}")


def command(commands: Commands, name: str, handler: Handler, summary: str, description: str = "", examples: str = "",
            *, reads_config: bool = True) -> argparse.ArgumentParser:
    """A subcommand whose --help reads like documentation: what it does, then examples."""
    parser = commands.add_parser(name, help=summary, description=description or summary,
                                 epilog=f"examples:\n{examples}" if examples else None,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.set_defaults(handler=handler, reads_config=reads_config)
    return parser


def group(commands: Commands, name: str, summary: str) -> Commands:
    """A command made of actions (`postwatch subscribers add ...`); the subparsers to add them to."""
    parser = commands.add_parser(name, help=summary, description=summary)
    return parser.add_subparsers(metavar="ACTION", required=True)


def bounded_int(text: str, *, low: int, high: int) -> int:
    """An argument type: a whole number from low to high."""
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number from {low} to {high}")
    return value


def fail(message: str, status: int = 2) -> int:
    """Say what went wrong in one line on stderr; the exit status."""
    print(f"postwatch: {message}", file=sys.stderr)
    return status


def run_async(fn, *args, **kwargs):
    """fn(*args, **kwargs), a coroutine function, run to its end in this thread."""
    from crawler.runtime import run_here

    return run_here(functools.partial(fn, *args, **kwargs))
