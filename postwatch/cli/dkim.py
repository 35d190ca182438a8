"""`postwatch dkim`: make a DKIM signing key, and print the DNS record to publish for it."""
from __future__ import annotations

import argparse
from pathlib import Path

from postwatch.cli.common import Commands, command, fail, group
from postwatch.config import Config, ConfigError, dkim_name_problems


def add_parser(commands: Commands) -> None:
    actions = group(commands, "dkim", "make a DKIM signing key and print the DNS record for it")
    keygen = command(actions, "keygen", dkim_keygen, "write a new 2048-bit RSA key (mode 0600) and print its TXT record", """\
postwatch signs every digest with DKIM when [dkim] selector and key_file are set; the public
half is published as a TXT record at SELECTOR._domainkey.DOMAIN.""", examples="""\
  postwatch dkim keygen --selector pw2026 --domain example.org --key dkim-pw2026.pem
""")
    keygen.add_argument("--selector", required=True, help="the DKIM selector, e.g. pw2026")
    keygen.add_argument("--domain", help="the signing domain (default: the domain of [digest] from)")
    keygen.add_argument("--key", metavar="FILE", help="where to write the key (default: [dkim] key_file, else "
                                                      "dkim-SELECTOR.pem beside the config file); never overwritten")
    command(actions, "record", dkim_record, "print the DNS TXT record for the configured [dkim] key")


def dkim_keygen(args: argparse.Namespace, config: Config) -> int:
    from digest.signing import DkimProblem, DkimSigner, generate_key

    domain = args.domain or config.from_domain
    problems = dkim_name_problems(args.selector, domain)
    if problems:
        raise ConfigError([f"dkim keygen: {problem}" for problem in problems])
    key_path = Path(args.key) if args.key else (config.base_dir / (config.dkim.key_file or f"dkim-{args.selector}.pem"))
    try:
        signer = DkimSigner(domain, args.selector, generate_key(key_path), key_path)
    except DkimProblem as exc:
        return fail(str(exc), 1)
    print(f"wrote {key_path.resolve()} (mode 0600: only this account may read it)\n"
          f"Publish this TXT record in the DNS of {signer.domain}:\n{signer.zone_line()}\n"
          f"then add to {config.path or 'the config file'}:\n[dkim]\nselector = \"{signer.selector}\"\n"
          f"domain = \"{signer.domain}\"\nkey_file = \"{key_path.resolve()}\"")
    return 0


def dkim_record(args: argparse.Namespace, config: Config) -> int:
    signer = config.dkim_signer()
    if signer is None:
        return fail("[dkim] selector and key_file are not set; make a key with: postwatch dkim keygen --selector NAME")
    print(signer.zone_line())
    return 0
