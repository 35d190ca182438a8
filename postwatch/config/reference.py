"""The configuration reference, docs/configuration.md, written from the schema so that it cannot
drift from it: every section's keys with their type, default and description.

    python -m postwatch.config.reference > docs/configuration.md
"""
from __future__ import annotations

import sys
from dataclasses import MISSING, Field, fields
from datetime import timedelta
from pathlib import Path
from typing import Any

from postwatch.config.schema import (ROUTE_KEYS, SECTIONS, SELECTOR_KEYS, SOURCE_ALIASES, Config, SourceConfig,
                                     toml_key)
from postwatch.vocabulary import format_duration

INTRO = """\
# Configuration reference

<!-- Written by `python -m postwatch.config.reference` from the config schema
     (postwatch/config/schema.py); edit the schema, not this file. -->

postwatch reads one TOML file: the one `--config` names, else `$POSTWATCH_CONFIG`, else
`postwatch.toml` in the current folder. Every key is optional: with no file at all postwatch
watches the LiNK blog, keeps its state in `postwatch.db` and writes digests into `outbox/`.
Paths are relative to the config file. A duration is a number of seconds or a number with a
unit: `90s`, `15m`, `1h`, `2d`, `1w`.

`postwatch config check` reads the file and says every problem, one line each;
`postwatch config example` prints an example with every setting.
"""

_TYPES = {"str": "string", "int": "integer", "float": "number", "bool": "boolean", "timedelta": "duration",
          "Path": "path", "list[str]": "list of strings", "dict[str, str]": "table", "dict[str, Any]": "table"}


def _type(spec: Field) -> str:
    """A field's type for people: "duration, 1s to 30d", "string: text or json"."""
    annotation = str(spec.type).removesuffix(" | None")
    text = _TYPES[annotation]
    if "range" in spec.metadata:
        low, high = (_literal(bound).strip('"') for bound in spec.metadata["range"])
        text += f", {low} to {high}"
    if "choices" in spec.metadata:
        *others, last = spec.metadata["choices"]
        text += f": {', '.join(others)} or {last}"
    return text


def _literal(value: Any) -> str:
    """A value as TOML spells it ("1h" for a duration)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, timedelta):
        return f'"{format_duration(value)}"'
    if isinstance(value, (str, Path)):
        return f'"{value}"'
    return repr(value)


def _default(spec: Field) -> str:
    if spec.default_factory is not MISSING:
        return f"`{_literal(spec.default_factory())}`".replace("`{}`", "`{ }`")
    if spec.default is MISSING:
        return "required"
    return "unset" if spec.default is None else f"`{_literal(spec.default)}`"


def _first_paragraph(text: str | None) -> str:
    return " ".join((text or "").split("\n\n")[0].split())


def _table(rows: list[tuple[str, str, str, str]]) -> list[str]:
    lines = ["| Key | Type | Default | Description |", "| --- | --- | --- | --- |"]
    return lines + [f"| `{key}` | {kind} | {default} | {doc} |" for key, kind, default, doc in rows]


def _field_rows(specs) -> list[tuple[str, str, str, str]]:
    return [(toml_key(spec), _type(spec), _default(spec), spec.metadata["doc"]) for spec in specs]


def reference() -> str:
    """The text of docs/configuration.md."""
    database = Config.__dataclass_fields__["database"]
    parts = [INTRO, "## Top level\n", *_table(_field_rows([database])), ""]
    for name, section in SECTIONS.items():
        parts += [f"## [{name}]\n", _first_paragraph(section.__doc__), "", *_table(_field_rows(fields(section))), ""]
    source_rows = _field_rows(fields(SourceConfig)) + [(key, "string", "unset", doc) for key, doc in SOURCE_ALIASES.items()]
    parts += ["## [[sources]]\n", _first_paragraph(SourceConfig.__doc__), "", *_table(source_rows), ""]
    parts += ["## [sources.selectors]\n", "CSS selectors (with parsel's `::text` and `::attr()`) that override what "
              "the source's kind finds; each is checked as the crawler will use it.", "",
              *_table([(key, "string", "unset", doc) for key, doc in SELECTOR_KEYS.items()]), ""]
    parts += ["## [[routes]]\n", "The operator's own destinations, kept in the file instead of in "
              "`postwatch subscribers`: each is a subscriber kept in step with it (added, updated, removed).", "",
              *_table([(key, kind, default, doc) for key, (kind, default, doc) in ROUTE_KEYS.items()])]
    return "\n".join(parts) + "\n"


def main() -> None:
    sys.stdout.write(reference())


if __name__ == "__main__":
    main()
