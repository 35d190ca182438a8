"""`postwatch operators`: the console's operator accounts (add, list, remove, passwd)."""
from __future__ import annotations

import argparse
import re
import sys

from postwatch.app import App
from postwatch.cli.common import Commands, command, fail, group
from postwatch.config import Config

ROLES = ("admin", "viewer")
OPERATOR_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,99}")

OPERATORS_HELP = """\
Operators sign in to the console ([console] listen) with a name and a password. An admin sees and
changes everything (check now, release held changes, pause, add sources, suppress and forget
subscribers, retry deliveries); a viewer sees the same pages and changes nothing (every form
answers 403).

The password is read from standard input when it is not a terminal (its first line: for scripts
and tests), else asked twice without echo. At least 10 characters. It is stored as an Argon2id
hash; postwatch never keeps the password itself. Each sign-in, sign-out and action is written to
the log and to the audit table.

exit status: 0 added; 1 an operator of that name exists; 2 a wrong name, role or password."""


def add_parser(commands: Commands) -> None:
    actions = group(commands, "operators", "the console's operator accounts: add, list, remove, passwd")
    add = command(actions, "add", add_operator, "add an operator who may sign in to the console", OPERATORS_HELP, """\
  postwatch operators add ada --role admin              asks for the password twice
  printf '%s\\n' "$PASSWORD" | postwatch operators add ci --role viewer   a script: the password on standard input
""")
    add.add_argument("name", metavar="NAME", help="the sign-in name: letters, digits, '.', '_', '-', '@' (at most 100)")
    add.add_argument("--role", choices=ROLES, required=True,
                     help="admin: sees and changes everything; viewer: sees everything, changes nothing")
    command(actions, "list", list_operators, "list operators: name, role, created, last sign-in")
    remove = command(actions, "remove", remove_operator, "remove an operator; their sessions end at once", """\
Remove the account. Every session it has ends at once (its next request goes to the sign-in
page); the audit log keeps what it did.

exit status: 0 removed; 1 no such operator.""")
    remove.add_argument("name", metavar="NAME")
    passwd = command(actions, "passwd", operator_password, "set an operator's password; their sessions end", """\
Set a new password (read as for `operators add`). Every session of that operator ends: they sign
in again with the new one.

exit status: 0 changed; 1 no such operator; 2 an unusable password.""", """\
  postwatch operators passwd ada
""")
    passwd.add_argument("name", metavar="NAME")


def _read_password(prompt_twice: bool = True) -> str:
    from postwatch.console.auth import password_problem

    if not sys.stdin.isatty():
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        import getpass

        password = getpass.getpass("password: ")
        if prompt_twice and getpass.getpass("again: ") != password:
            raise ValueError("the two passwords differ")
    problem = password_problem(password)
    if problem:
        raise ValueError(problem)
    return password


def _shell_user() -> str:
    """Who ran the command, as the audit table names them."""
    import getpass

    try:
        return f"shell:{getpass.getuser()}"
    except Exception:
        return "shell"


def add_operator(args: argparse.Namespace, config: Config) -> int:
    from postwatch.console.auth import hash_password

    if not OPERATOR_NAME.fullmatch(args.name):
        return fail(f"{args.name!r} is not a usable operator name (letters, digits, '.', '_', '-', '@'; at most 100)")
    try:
        password = _read_password()
    except ValueError as exc:
        return fail(str(exc))
    with App.open(config) as app:
        if not app.store.add_operator(args.name, args.role, hash_password(password)):
            return fail(f"an operator named {args.name!r} exists already (change the password: operators passwd)", 1)
        app.store.audit(_shell_user(), "operator added", args.name, f"role {args.role}", "cli")
    print(f"added operator {args.name} ({args.role})")
    return 0


def list_operators(args: argparse.Namespace, config: Config) -> int:
    with App.open(config, read_only=True) as app:
        rows = app.store.list_operators()
    for op in rows:
        last = f"last sign-in {op.last_sign_in_at:%Y-%m-%d %H:%M}" if op.last_sign_in_at else "never signed in"
        print(f"{op.name:<24} {op.role:<7} added {op.created_at:%Y-%m-%d %H:%M}, {last}")
    print(f"{len(rows)} operator{'s' * (len(rows) != 1)}")
    return 0


def remove_operator(args: argparse.Namespace, config: Config) -> int:
    with App.open(config) as app:
        if not app.store.remove_operator(args.name):
            return fail(f"no operator {args.name!r}", 1)
        app.store.audit(_shell_user(), "operator removed", args.name, None, "cli")
    print(f"removed operator {args.name}; their sessions have ended")
    return 0


def operator_password(args: argparse.Namespace, config: Config) -> int:
    from postwatch.console.auth import hash_password

    with App.open(config) as app:
        if app.store.get_operator(args.name) is None:
            return fail(f"no operator {args.name!r}", 1)
        try:
            password = _read_password()
        except ValueError as exc:
            return fail(str(exc))
        app.store.set_operator_password(args.name, hash_password(password))
        app.store.audit(_shell_user(), "password changed", args.name, None, "cli")
    print(f"{args.name}: password changed; their sessions have ended")
    return 0
