"""`postwatch webhook`: a receiver's signing secret, and checking a delivery's signature as a
receiver does."""
from __future__ import annotations

import argparse
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

from postwatch.cli.common import Commands, command, fail, group
from postwatch.config import Config

VERIFY_HELP = """\
A delivery is a POST whose body is JSON of the schema postwatch.events/1, with the header
  Postwatch-Signature: t=TIMESTAMP,v1=HEX
where HEX is the HMAC-SHA256 of TIMESTAMP + "." + body keyed with the receiver's secret. This
command checks one: the signature must match and the timestamp be within --tolerance seconds of
now (an older one is a replay). Receivers also drop a delivery id (the body's "id", the header
Postwatch-Delivery) that they have seen before. The receiver's secret is read from the
environment, never from the command line.

exit status: 0 valid; 1 refused (one line saying why); 2 no secret or no body."""


def add_parser(commands: Commands) -> None:
    actions = group(commands, "webhook", "webhook signing secrets, and checking a delivery's signature")
    secret = command(actions, "secret", webhook_secret_command, "print the signing secret of one webhook receiver", """\
Each webhook receiver has its own signing secret, derived from $POSTWATCH_WEBHOOK_SECRET (the
[webhook] secret_env), else from the unsubscribe secret: nothing to store, and the same URL
always has the same secret. Give it to whoever runs the receiver.""", examples="""\
  postwatch webhook secret https://hooks.example.org/postwatch
""")
    secret.add_argument("url", metavar="URL")
    verify = command(actions, "verify", webhook_verify_command,
                     "check a delivery's Postwatch-Signature header against its body, as a receiver does", VERIFY_HELP,
                     examples="""\
  POSTWATCH_WEBHOOK_RECEIVER_SECRET=whsec_... postwatch webhook verify body.json --signature "t=...,v1=..."
""", reads_config=False)
    verify.add_argument("file", metavar="FILE", help="the request body exactly as received ('-': standard input)")
    verify.add_argument("--signature", required=True, metavar="HEADER", help="the Postwatch-Signature header's value")
    verify.add_argument("--secret-env", default="POSTWATCH_WEBHOOK_RECEIVER_SECRET", metavar="NAME",
                        help="the variable holding the receiver's secret (default: POSTWATCH_WEBHOOK_RECEIVER_SECRET)")
    verify.add_argument("--tolerance", type=float, default=300, metavar="SECONDS",
                        help="how old (or early) a signature may be (default: 300)")


def webhook_secret_command(args: argparse.Namespace, config: Config) -> int:
    from digest.delivery import message_kind
    from digest.webhook import endpoint_secret

    if message_kind(args.url.strip()) != "webhook":
        return fail(f"{args.url!r} is not a webhook URL (http:// or https://)")
    print(endpoint_secret(config.webhook_secret(), args.url.strip()))
    return 0


def webhook_verify_command(args: argparse.Namespace, config: Config) -> int:
    from digest.webhook import InvalidSignature, verify_signature

    secret = os.environ.get(args.secret_env, "")
    if not secret:
        return fail(f"${args.secret_env} is empty: set it to the receiver's signing secret (whsec_...)")
    try:
        body = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    except OSError as exc:
        return fail(f"{args.file}: cannot read the body: {exc.strerror or exc}")
    try:
        timestamp = verify_signature(secret, args.signature, body, tolerance=args.tolerance)
    except InvalidSignature as exc:
        return fail(f"signature refused: {exc}", 1)
    signed = datetime.fromtimestamp(timestamp, timezone.utc)
    print(f"signature ok: signed {signed:%Y-%m-%d %H:%M:%S} UTC, {len(body)} bytes")
    return 0
