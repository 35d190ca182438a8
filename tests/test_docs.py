"""The docs name only what exists (in the manner of datasette's documentation tests): every
`postwatch ...` command line in README.md's and docs/*.md's code blocks parses with the CLI's
own parser, every command (`sources test`) and flag (`--once`, `-o FILE`) they name in prose
exists, every `[section] key` setting they name is in the config schema (postwatch/config/schema.py),
and every setting of the schema is shown in the example config
(postwatch/examples/postwatch.toml). In-process and quick but for one test, which builds the
documentation site with `mkdocs build --strict` (a broken link, anchor or nav entry fails it)."""
from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from postwatch import config as schema
from postwatch.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
EXAMPLE = ROOT / "postwatch" / "examples" / "postwatch.toml"


def settings() -> dict[str, set[str]]:
    """Every setting of the config schema: {section: {toml key}}; "" holds the top-level keys,
    "sources", "sources.selectors" and "routes" the keys of the array tables."""
    known: dict[str, set[str]] = {"": {"database"}, "sources": set(schema._SOURCE_KEYS),
                                  "sources.selectors": set(schema._SELECTOR_KEYS), "routes": set(schema._ROUTE_KEYS)}
    for section, (cls, renames) in schema._SECTIONS.items():
        toml_key = {attr: key for key, attr in renames.items()}
        known[section] = {toml_key.get(f.name, f.name) for f in fields(cls)}
    return known


SHELLS = {"sh", "shell", "bash", "console"}
REDIRECTS = re.compile(r"^\d?[<>]")   # > FILE, >> FILE, 2>&1, < FILE: the shell's, not postwatch's


def code_blocks(path: Path) -> list[tuple[int, str, str]]:
    """(line number, block language, line) of every line inside the file's fenced code blocks."""
    found, language = [], None
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.lstrip().startswith("```"):
            language = line.strip().removeprefix("```").strip() if language is None else None
            continue
        if language is not None:
            found.append((number, language, line))
    return found


def command_lines() -> list[tuple[str, list[str]]]:
    """Every `postwatch ...` command in the docs' code blocks, as the argv after `postwatch`:
    in shell blocks, lines that start with it (or with a path to it such as .venv/bin/), and
    each `&&`, `;` or `|` part of such a line; in other blocks (a session with its output),
    lines after a `$ ` prompt."""
    commands = []
    for path in DOCS:
        for number, language, line in code_blocks(path):
            text = line.strip()
            if text.startswith("$ "):
                text = text[2:]
            elif language not in SHELLS:
                continue
            for part in re.split(r"&&|\|\||;|\|", text):
                try:
                    words = shlex.split(part, comments=True)
                except ValueError:
                    continue
                words = words[:next((i for i, w in enumerate(words) if REDIRECTS.match(w)), len(words))]
                if words and words[0].rsplit("/", 1)[-1] == "postwatch":
                    commands.append((f"{path.relative_to(ROOT)}:{number}", words[1:]))
    return commands


def named_settings() -> list[tuple[str, str, str]]:
    """(where, section, key) of every `[section] key` the docs name, in prose or code."""
    found = []
    for path in DOCS:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for section, key in re.findall(r"\[\[?([a-z_.]+)\]\]? ([a-z_]+)\b", line):
                found.append((f"{path.relative_to(ROOT)}:{number}", section, key))
    return found


def example_settings() -> dict[str, set[str]]:
    """The keys the example config shows, set or commented out, by the section they are under
    (a commented-out header such as `# [dkim]` counts)."""
    shown: dict[str, set[str]] = {"": set()}
    section = ""
    for line in EXAMPLE.read_text(encoding="utf-8").splitlines():
        text = line.strip().lstrip("#").strip()
        header = re.fullmatch(r"\[\[?([a-z_.]+)\]\]?", text)
        if header:
            section = header.group(1)
            shown.setdefault(section, set())
            if "." in section:          # [sources.selectors] shows [sources] selectors
                parent, _, key = section.rpartition(".")
                shown.setdefault(parent, set()).add(key)
            continue
        key = re.match(r"([a-z_]+)\s*=", text)
        if key:
            shown[section].add(key.group(1))
    return shown


def inline_commands() -> list[tuple[str, list[str]]]:
    """Every `postwatch ...` inline code span in the docs' prose, as the argv after `postwatch`
    (placeholders such as URL and FILE included: only its command words and flags are checked)."""
    found = []
    for path in DOCS:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for span in re.findall(r"`([^`]*postwatch [^`]*)`", line):
                try:
                    words = shlex.split(span)
                except ValueError:
                    continue
                if words and words[0].rsplit("/", 1)[-1] == "postwatch":
                    found.append((f"{path.relative_to(ROOT)}:{number}", words[1:]))
    return found


def inline_spans() -> list[tuple[str, list[str]]]:
    """(where, words) of every inline code span in the docs' prose, split as a shell would."""
    found = []
    for path in DOCS:
        inside_block = False
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.lstrip().startswith("```"):
                inside_block = not inside_block
            if inside_block:
                continue
            for span in re.findall(r"`([^`]+)`", line):
                if span.startswith("["):      # a setting: test_every_setting_the_docs_name_exists
                    continue
                try:
                    words = [word.strip("[]") for word in shlex.split(span)]
                except ValueError:
                    continue
                if words:
                    found.append((f"{path.relative_to(ROOT)}:{number}", words))
    return found


def top_level_commands() -> set[str]:
    parser = build_parser()
    return {name for action in parser._actions if isinstance(action, argparse._SubParsersAction)
            for name in action.choices}


def all_flags() -> set[str]:
    """Every option string of the CLI: the top parser's and every subcommand's, at any depth."""
    found, parsers = set(), [build_parser()]
    while parsers:
        parser = parsers.pop()
        for action in parser._actions:
            found.update(action.option_strings)
            if isinstance(action, argparse._SubParsersAction):
                parsers.extend(action.choices.values())
    return found


def prose_commands() -> list[tuple[str, list[str]]]:
    """Spans that name a command without the `postwatch` in front (`sources release`,
    `check --full`): a top-level command followed by a subcommand, a flag or an argument."""
    commands = top_level_commands()
    return [(where, words) for where, words in inline_spans() if len(words) > 1 and words[0] in commands]


def prose_flags() -> list[tuple[str, str]]:
    """Every flag in a span that starts with one (`--once`, `-o FILE`, `--log-format json`)."""
    return [(where, word) for where, words in inline_spans() if re.match(r"-{1,2}[A-Za-z]", words[0])
            for word in words if re.match(r"-{1,2}[A-Za-z]", word)]


def command_and_flags(argv: list[str]) -> tuple[list[str], argparse.ArgumentParser, list[str]]:
    """The subcommand words of `argv`, the parser they lead to, and the flags that parser does
    not know."""
    parser, path = build_parser(), []
    for word in argv:
        subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if word.startswith("-") or not subparsers or word not in subparsers[0].choices:
            break
        parser = subparsers[0].choices[word]
        path.append(word)
    unknown = [word for word in argv if word.startswith("-")
               and word.split("=", 1)[0] not in parser._option_string_actions]
    return path, parser, unknown


COMMANDS = command_lines()
INLINE = inline_commands() + prose_commands()
FLAGS = prose_flags()


def test_the_docs_show_commands():
    assert len(COMMANDS) >= 30, COMMANDS


@pytest.mark.parametrize("where, argv", COMMANDS, ids=[where for where, _ in COMMANDS])
def test_every_command_in_the_docs_parses(where, argv):
    parser = build_parser()
    if any(word in ("-h", "--help") for word in argv):
        with pytest.raises(SystemExit) as exit:
            parser.parse_args(argv)
        assert exit.value.code == 0, f"{where}: postwatch {shlex.join(argv)}"
        return
    try:
        parser.parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"{where}: `postwatch {shlex.join(argv)}` does not parse (exit {exc.code})")


@pytest.mark.parametrize("where, argv", INLINE, ids=[f"{where} {' '.join(argv)}" for where, argv in INLINE])
def test_every_command_named_in_prose_exists(where, argv):
    path, parser, unknown = command_and_flags(argv)
    # `postwatch --help`, `postwatch COMMAND --help`: the top level's flags, or a placeholder
    assert path or argv[0].startswith("-") or argv[0].isupper(), f"{where}: `postwatch {shlex.join(argv)}` names no command"
    rest = argv[len(path):]
    takes_value = {flag for flag, action in parser._option_string_actions.items() if action.nargs != 0}
    arguments = [word for before, word in zip([None, *rest], rest)
                 if not word.startswith("-") and before not in takes_value]
    if arguments and arguments[0].isidentifier() and arguments[0].islower():
        # a lower-case word after the command that is not one of its subcommands: a typo'd
        # subcommand unless the command takes a positional argument there (feed link, history link)
        assert any(not a.option_strings and not isinstance(a, argparse._SubParsersAction) for a in parser._actions), \
            f"{where}: `postwatch {shlex.join(argv)}`: no subcommand {arguments[0]!r}"
    assert not unknown, f"{where}: `postwatch {shlex.join(argv)}`: no such option {', '.join(unknown)}"


def test_every_setting_the_docs_name_exists():
    known = settings()
    wrong = [f"{where}: [{section}] {key}" for where, section, key in named_settings()
             if key not in known.get(section, set())]
    assert not wrong, "settings the docs name that the config schema does not have:\n" + "\n".join(wrong)


def test_every_setting_is_in_the_example_config():
    shown = example_settings()
    missing = [f"[{section}] {key}" if section else key for section, keys in sorted(settings().items())
               for key in sorted(keys - shown.get(section, set()))]
    assert not missing, f"settings missing from {EXAMPLE.relative_to(ROOT)}: {', '.join(missing)}"


def test_the_example_config_shows_only_settings():
    known = settings()
    extra = [f"[{section}] {key}" if section else key for section, keys in sorted(example_settings().items())
             for key in sorted(keys - known.get(section, set()))]
    assert not extra, f"{EXAMPLE.relative_to(ROOT)} shows keys the schema does not have: {', '.join(extra)}"


def test_the_example_configs_values_are_the_defaults():
    """What the example sets (not commented out) is what postwatch does without it, as its
    first line says: copying it changes nothing."""
    import tomllib

    raw = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    example, default = schema.parse_config(raw), schema.Config()
    differ = [f"[{section}] {key}" for section, (cls, renames) in schema._SECTIONS.items() for key in raw.get(section, {})
              if getattr(getattr(example, section), renames.get(key, key)) != getattr(getattr(default, section),
                                                                                   renames.get(key, key))]
    assert not differ, f"{EXAMPLE.relative_to(ROOT)} sets other values than the defaults: {', '.join(differ)}"
    assert example.database == default.database
    assert [(s.name, s.url, s.kind) for s in example.sources] == [(s.name, s.url, s.kind) for s in schema.default_sources()]


def test_the_docs_name_commands_and_flags_in_prose():
    assert len(INLINE) >= 40 and len(FLAGS) >= 10, (len(INLINE), len(FLAGS))


@pytest.mark.parametrize("where, flag", FLAGS, ids=[f"{where} {flag}" for where, flag in FLAGS])
def test_every_flag_named_in_prose_exists(where, flag):
    name = flag.split("=", 1)[0]
    repeated = re.fullmatch(r"-([A-Za-z])\1+", name)   # -vv: -v given twice
    known = all_flags()
    assert name in known or (repeated and f"-{repeated.group(1)}" in known), \
        f"{where}: no postwatch command has the option {flag}"


def nav_pages(nav) -> list[str]:
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, dict):
        return [page for value in nav.values() for page in nav_pages(value)]
    return [page for item in nav for page in nav_pages(item)]


def test_every_page_is_in_the_site_nav_and_every_nav_entry_is_a_page():
    import yaml

    nav = nav_pages(yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))["nav"])
    pages = sorted(path.name for path in (ROOT / "docs").glob("*.md"))
    assert sorted(nav) == pages, f"mkdocs.yml nav {sorted(nav)} against docs/*.md {pages}"


def test_the_readmes_links_lead_to_files_that_exist():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = [target.split("#", 1)[0] for target in re.findall(r"\]\(([^)\s]+)\)", text)
               if not re.match(r"[a-z]+:", target)]
    missing = [target for target in targets if not (ROOT / target).exists()]
    assert targets and not missing, f"README.md links to files that do not exist: {missing}"


def test_the_documentation_site_builds_strictly(tmp_path):
    """`mkdocs build --strict`: a link to a page or anchor that does not exist, or a nav entry
    without its page, fails the build."""
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
                           str(ROOT / "mkdocs.yml"), "--site-dir", str(tmp_path / "site")],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "WARNING" not in done.stderr, done.stderr
    built = {path.relative_to(tmp_path / "site").as_posix() for path in (tmp_path / "site").rglob("index.html")}
    assert {"index.html", "operator/index.html", "configuration/index.html", "architecture/index.html"} <= built


def test_the_readme_opens_with_the_two_set_up_commands_and_ci_runs_the_second():
    """The README's first code block is the two commands for a fresh machine: install and run
    the main job, then the tests; .ci/run runs that same test command."""
    blocks = re.findall(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), re.S)
    install, tests = blocks[0].strip().splitlines()
    assert install.endswith("postwatch run --once") and "pytest" in tests, blocks[0]
    install_extra, run_tests = (part.strip() for part in tests.split("&&"))
    ci_lines = [line for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
                if not line.startswith("#") and run_tests in line]
    assert ci_lines and "'.[test]'" in install_extra and "'.[test]'" in ci_lines[0], \
        f".ci/run does not run the README's test command: {tests}"
