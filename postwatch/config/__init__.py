"""The one TOML config file, its defaults and its validation.

Every setting has a default, so postwatch runs with no file at all: the LiNK blog as the only
source, SQLite state in ./postwatch.db and digests written as .eml files into ./outbox.

postwatch.config.schema holds the sections (each checks its own values), postwatch.config.parse
reads the file, postwatch.config.reference writes docs/configuration.md; the words shared with
the CLI and the subscriber checks are in postwatch.vocabulary, secrets and keys in postwatch.keys.
The names other modules import stay importable from here.
"""
from __future__ import annotations

from crawler.urls import LINK_BLOG_URL
from postwatch.config.parse import (CONFIG_ENV, DEFAULT_CONFIG_NAME, check_config_file_owner, database_url_problem,
                                    find_config_path, load_config, parse_config, validate)
from postwatch.config.schema import (ROUTE_KEYS, SECTIONS, SELECTOR_KEYS, SOURCE_KEYS, AlertConfig, Config,
                                     ConsoleConfig, CrawlConfig, DaemonConfig, DeliveryConfig, DigestConfig,
                                     DkimConfig, FeedsConfig, InboundConfig, RouteConfig, Section, SignupConfig,
                                     SmtpConfig, SourceConfig, UnsubscribeConfig, WebhookConfig, default_sources,
                                     dkim_name_problems, scrapy_overrides, selector_problem, source_interval_problem,
                                     toml_key)
from postwatch.keys import MIN_SECRET_LENGTH
from postwatch.vocabulary import (ALL_SOURCES, CADENCES, LEADS, LOG_FORMATS, LONGEST_DURATION, TIME_OF_DAY, WEEKDAYS,
                                  ConfigError, format_duration, parse_duration)

# The schema as tests/test_docs.py reads it: {section: (dataclass, {toml key: attribute})} and the
# keys of the arrays of tables.
_SECTIONS = {name: (cls, {toml_key(spec): spec.name for spec in cls.__dataclass_fields__.values()
                          if toml_key(spec) != spec.name})
             for name, cls in SECTIONS.items()}
_SOURCE_KEYS, _SELECTOR_KEYS, _ROUTE_KEYS = SOURCE_KEYS, set(SELECTOR_KEYS), set(ROUTE_KEYS)

__all__ = [
    "ALL_SOURCES", "CADENCES", "CONFIG_ENV", "DEFAULT_CONFIG_NAME", "LEADS", "LINK_BLOG_URL", "LOG_FORMATS",
    "LONGEST_DURATION", "MIN_SECRET_LENGTH", "ROUTE_KEYS", "SECTIONS", "SELECTOR_KEYS", "SOURCE_KEYS", "TIME_OF_DAY",
    "WEEKDAYS", "AlertConfig", "Config", "ConfigError", "ConsoleConfig", "CrawlConfig", "DaemonConfig",
    "DeliveryConfig", "DigestConfig", "DkimConfig", "FeedsConfig", "InboundConfig", "RouteConfig", "Section",
    "SignupConfig", "SmtpConfig", "SourceConfig", "UnsubscribeConfig", "WebhookConfig", "check_config_file_owner",
    "database_url_problem", "default_sources", "dkim_name_problems", "find_config_path", "format_duration",
    "load_config", "parse_config", "parse_duration", "scrapy_overrides", "selector_problem",
    "source_interval_problem", "toml_key", "validate",
]
