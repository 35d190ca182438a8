"""docs/configuration.md is written from the config schema (postwatch.config.reference): the
committed file is what the generator writes, it names every key the parser accepts, and the
defaults it states are what postwatch does without the key. In-process and quick."""
from __future__ import annotations

import re
import tomllib
from dataclasses import fields
from pathlib import Path

import pytest

from postwatch.config import SECTIONS, SELECTOR_KEYS, SOURCE_KEYS, Config, ConfigError, parse_config, toml_key
from postwatch.config.reference import reference

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "docs" / "configuration.md"


def documented() -> dict[str, dict[str, str]]:
    """{heading: {key: default column}} of the reference's tables ("[crawl]", "[[sources]]", "Top level")."""
    tables: dict[str, dict[str, str]] = {}
    heading = ""
    for line in REFERENCE.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            heading = line[3:].strip()
            tables[heading] = {}
        row = re.fullmatch(r"\| `([a-z_]+)` \| [^|]* \| ([^|]*) \| .* \|", line)
        if row:
            tables[heading][row.group(1)] = row.group(2).strip()
    return tables


def test_the_committed_reference_is_what_the_schema_writes():
    assert REFERENCE.read_text(encoding="utf-8") == reference(), (
        "docs/configuration.md differs from the schema: python -m postwatch.config.reference > docs/configuration.md")


def test_the_reference_names_every_key_the_parser_accepts():
    tables = documented()
    accepted = {"Top level": {"database"}, "[[sources]]": set(SOURCE_KEYS), "[sources.selectors]": set(SELECTOR_KEYS),
                "[[routes]]": {"to", "cadence", "at", "tz", "day", "sources", "include", "exclude"}}
    accepted |= {f"[{name}]": {toml_key(spec) for spec in fields(cls)} for name, cls in SECTIONS.items()}
    assert {heading: set(keys) for heading, keys in tables.items()} == accepted
    # and the parser takes each of them (an unknown one is refused)
    for name, cls in SECTIONS.items():
        with pytest.raises(ConfigError, match=rf"unknown key 'nonsense' in \[{name}\]"):
            parse_config({name: {"nonsense": 1}})


def test_each_default_the_reference_states_is_what_postwatch_does_without_the_key():
    tables, differ, checked = documented(), [], 0
    for name, defaults in Config().sections().items():
        stated = {key: text.strip("`") for key, text in tables[f"[{name}]"].items() if text.startswith("`")}
        given = tomllib.loads("\n".join(f"{key} = {value}" for key, value in stated.items()))
        parsed = parse_config({name: given}).sections()[name]
        for spec in fields(defaults):
            if toml_key(spec) in stated:
                checked += 1
                if getattr(parsed, spec.name) != getattr(defaults, spec.name):
                    differ.append(f"[{name}] {toml_key(spec)} = {stated[toml_key(spec)]}")
    assert checked >= 70 and not differ, differ
