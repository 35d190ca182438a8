"""`postwatch demo`: the whole loop offline, against a local replica of the LiNK blog.

Not imported here: postwatch.demo, which needs the crawler and the rendering stack both."""
from __future__ import annotations

import argparse

from postwatch.cli.common import Commands, command
from postwatch.config import Config


def add_parser(commands: Commands) -> None:
    demo = command(commands, "demo", demo_command, "the whole loop offline in one command, against a local replica", """\
Start a local replica of the LiNK blog and a local SMTP server on free loopback ports, run a
baseline check, add and edit posts, check again and send the digest. Touches none of your own
config or state.""", reads_config=False)
    demo.add_argument("--keep", action="store_true", help="keep the temporary folder with the state, emails and preview")


def demo_command(args: argparse.Namespace, config: Config) -> int:
    from postwatch.demo import run_demo

    return run_demo(keep=args.keep)
