"""Fixtures shared by the tests: the LiNK replica, a real SMTP server, the real `postwatch` CLI
against them, a PostgreSQL database of one's own, and the Store on SQLite and on PostgreSQL.
Plain helpers (a free port, a config file, the daemon as a subprocess) live in
support.harness."""
from __future__ import annotations

import os
import shutil
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import create_engine, text

from support.harness import PG_SERVER, Cli, write_config
from postwatch.testing.mailcatcher import MailCatcher
from postwatch.testing.replica import BlogReplica
from state import Store

PG_URL = os.environ.get("POSTWATCH_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture
def site():
    with BlogReplica() as replica:
        yield replica


@pytest.fixture
def smtp(tmp_path):
    with MailCatcher(tmp_path / "received") as catcher:
        yield catcher


@pytest.fixture
def cli(tmp_path, site, smtp) -> Cli:
    return Cli(write_config(tmp_path, site.blog_url, smtp.port))


@pytest.fixture
def pg_database():
    """The name of a PostgreSQL database of this test's own on PG_SERVER, dropped afterwards."""
    import psycopg                            # in the dependencies: a missing one is an error, not a skip
    name = f"pw_lock_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not reachable at {PG_SERVER} (set POSTWATCH_TEST_PG_SERVER to another server): {exc}")
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory):
    """A SQLite database at the head revision, made once per test process: a test's store is a
    copy of it (0.01 s instead of 0.25 s of Alembic migrations; the migrations have tests of
    their own)."""
    path = tmp_path_factory.mktemp("template") / "state.db"
    Store(str(path)).close()
    return path


@pytest.fixture(scope="session")
def migrated_postgresql():
    """A PostgreSQL database at the head revision, made once per test process: a test's store is
    a database created from it as a template (CREATE DATABASE … TEMPLATE, instead of 1 s of
    migrations); the name of the template, dropped at the end."""
    name = f"pw_template_{uuid.uuid4().hex[:12]}"
    admin = create_engine(f"{PG_SERVER.replace('postgresql://', 'postgresql+psycopg://', 1)}/postgres",
                          isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        pytest.fail(f"PostgreSQL is not reachable at {PG_SERVER} (set POSTWATCH_TEST_PG_SERVER to another server): {exc}")
    template = Store(_pg_url(name))
    template.close()
    yield admin, name
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _pg_url(database: str) -> str:
    return f"{PG_SERVER.replace('postgresql://', 'postgresql+psycopg://', 1)}/{database}"


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    """A new Store at the head revision, once on SQLite and once on PostgreSQL (a database of its
    own on PG_SERVER)."""
    if request.param == "sqlite":
        path = tmp_path / "state.db"
        shutil.copyfile(request.getfixturevalue("migrated_sqlite"), path)
        s = Store(str(path), removal_confirm_after=timedelta(hours=1))
        yield s
        s.close()
        return
    admin, template = request.getfixturevalue("migrated_postgresql")
    name = f"t_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    s = Store(_pg_url(name), removal_confirm_after=timedelta(hours=1))
    yield s
    s.close()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


# --------------------------------------------------------------------------------------------
# The fast tier: `pytest -m "not daemon" -n 2` (see pyproject.toml) leaves out the tests that
# drive postwatch (or another program) as a subprocess: the CLI, `postwatch run`, worker
# clusters, Chromium, SpamAssassin. Listed here, by file (ALL: every test of it) or by test,
# rather than in each file, so that one place says what the inner loop leaves out. The slow
# trials count as daemon tests too. In a run that leaves them out, a test not listed here that
# starts a subprocess fails at once, naming itself: the tier cannot grow slow unnoticed.
# --------------------------------------------------------------------------------------------
ALL = "*"
DAEMON_TESTS: dict[str, object] = {
    "test_accessibility.py": ALL,          # headless Chromium
    "test_apprise.py": {
        "test_a_route_with_a_bad_filter_or_address_is_one_line_each_from_config_check",
        "test_an_apprise_failure_is_retried_through_the_outbox",
        "test_an_apprise_route_in_the_config_is_a_subscriber_kept_in_step_with_the_file",
        "test_an_apprise_subscriber_gets_a_short_text_of_the_digest",
        "test_an_unknown_apprise_service_is_refused_when_added",
    },
    "test_bulkheads_checks.py": {
        "test_a_crashing_check_is_recorded_as_failed_and_waits_its_interval",
        "test_a_dripping_site_holds_no_other_source_health_answers_and_sigterm_ends_the_daemon",
        "test_a_post_with_control_characters_is_stored_and_mailed",
        "test_scrapy_download_timeout_bounds_a_dripping_robots_txt_and_listing",
    },
    "test_bulkheads_delivery.py": {
        "test_a_dripping_smtp_server_holds_up_neither_webhooks_nor_the_stop",
        "test_a_dripping_webhook_receiver_holds_up_neither_email_nor_healthz",
        "test_sigterm_during_a_dripping_webhook_ends_within_the_grace_and_the_deadline",
    },
    "test_console.py": ALL,
    "test_docs.py": {"test_the_documentation_site_builds_strictly"},   # runs mkdocs
    "test_daemon_narration.py": ALL,
    "test_oneshot.py": ALL,
    "test_archive.py": {
        "test_the_archive_lists_each_change_with_its_diff_and_nothing_of_the_reader",
        "test_archive_pages_answer_304_when_the_readers_copy_is_current",
        "test_view_in_browser_opens_the_same_items_without_any_token",
        "test_the_front_page_links_to_signup_the_archive_and_the_feeds",
        "test_the_archive_fits_a_phone_and_a_desktop",
        "test_the_feed_of_editions_links_each_days_changes_as_one_digest_page",
        "test_a_removed_post_shows_its_last_kept_version_on_the_archive",
        "test_postwatch_archive_writes_a_static_copy_a_web_server_can_serve",
    },
    "test_cli_sources.py": ALL,
    "test_cluster.py": {
        "test_a_check_cut_off_by_a_stop_leaves_its_sources_due_at_once",
        "test_a_hosts_next_batch_starts_as_soon_as_the_one_before_it_ends",
        "test_a_queue_installed_before_the_wake_trigger_gets_it_at_the_next_start",
        "test_a_silent_worker_that_is_alive_keeps_its_host_and_no_one_crawls_beside_it",
        "test_a_stalled_mail_job_whose_kind_is_already_waiting_is_closed_not_retried",
        "test_a_worker_killed_mid_check_is_recovered_and_its_host_checked_again",
        "test_a_worker_running_several_mail_jobs_keeps_to_its_smtp_connections",
        "test_a_worker_starting_writes_no_source_another_worker_is_recording",
        "test_a_worker_stopped_mid_check_finishes_the_check_before_it_exits",
        "test_a_worker_stopped_the_moment_it_says_started_stops_cleanly",
        "test_a_worker_whose_database_restarts_waits_for_it_and_goes_on",
        "test_planning_twice_plans_nothing_twice_and_mail_jobs_run_twice_send_once",
        "test_three_workers_share_the_checks_politely_and_mail_new_posts_once",
        "test_two_recoveries_at_once_close_a_stalled_check_once_and_raise_nothing",
        "test_worker_refuses_a_database_a_daemon_runs_on",
        "test_worker_refuses_sqlite_with_one_line",
    },
    "test_cluster_trial.py": {
        "test_the_mail_catcher_process_writes_down_each_message_it_accepts",
        "test_the_replica_farm_serves_each_source_its_own_blog_and_logs_its_requests",
    },
    "test_config.py": {
        "test_a_from_domain_a_relay_refuses_is_refused",
        "test_an_incomplete_dkim_section_is_refused_on_load",
        "test_an_unsubscribe_url_readers_cannot_open_is_refused",
        "test_config_check_accepts_the_shipped_example",
        "test_config_check_lists_every_problem_on_its_own_line",
        "test_daemon_log_format_from_the_config_and_the_command_line",
        "test_dkim_keygen_then_config_check_signs_and_verifies_offline",
        "test_smtp_password_comes_from_the_environment",
        "test_the_default_outbox_setup_needs_nothing_more",
        "test_the_deploy_config_is_valid",
        "test_the_envelope_sender_must_be_a_plain_address",
        "test_with_a_relay_the_listen_address_and_a_localhost_sender_are_refused",
    },
    "test_config_validation.py": ALL,
    "test_crawl_safety.py": {
        "test_a_listing_with_ten_thousand_new_links_is_held_after_a_capped_number_of_fetches",
        "test_feed_entries_and_redirects_to_another_private_origin_are_never_fetched",
        "test_max_post_pages_must_be_at_least_one",
        "test_sources_test_refuses_a_listing_that_redirects_to_another_private_origin",
    },
    "test_daemon.py": ALL,
    "test_daemon_delivery.py": {
        "test_a_cli_digest_beside_a_daemon_whose_flush_outlasts_its_lease_sends_nothing_twice",
        "test_a_digest_refused_once_with_451_is_delivered_by_the_running_daemon",
        "test_a_webhook_answered_500_is_delivered_once_by_the_daemon_after_a_retry",
        "test_immediate_subscribers_get_events_published_by_a_cli_check_and_by_a_release",
        "test_messages_left_leased_by_a_killed_flush_are_delivered_by_the_daemon",
        "test_sigterm_in_the_middle_of_a_flush_stops_within_the_grace_and_doubles_nothing",
    },
    "test_daemon_lease.py": ALL,
    "test_demo.py": ALL,
    "test_digest_delivery.py": {
        "test_a_korean_subscribers_digest_through_the_cli_is_in_korean",
        "test_spamassassin_scores_each_digest_as_wanted_mail",
    },
    "test_digest_rendering.py": {
        "test_the_digest_has_no_horizontal_overflow",
    },
    "test_e2e_cli.py": ALL,
    "test_extraction_upgrade.py": {
        "test_an_upgraded_extractor_mails_no_edits_and_a_real_edit_after_it_is_mailed_once",
    },
    "test_feeds.py": {
        "test_a_source_cannot_be_named_all",
        "test_postwatch_feed_without_a_database_is_one_line_and_creates_nothing",
        "test_postwatch_feed_writes_only_the_output_file_and_refuses_unknown_sources",
        "test_the_daemon_serves_each_change_as_an_entry_of_valid_atom_with_conditional_get",
        "test_the_served_feed_is_bounded_by_the_entries_setting_newest_first",
    },
    "test_freshness.py": ALL,
    "test_hardening.py": ALL,
    "test_inbound.py": ALL,
    "test_keyword_filters.py": {
        "test_a_bad_regular_expression_in_a_source_is_one_line_from_config_check",
        "test_a_catastrophic_pattern_neither_freezes_the_daemon_nor_holds_back_the_others",
        "test_a_sources_filters_in_the_config_apply_to_every_subscriber",
        "test_an_event_filtered_out_for_one_subscriber_still_reaches_the_others",
        "test_subscriber_filters_from_the_command_line_and_a_csv_import_are_checked",
        "test_subscribers_add_refuses_a_lookahead_in_one_line",
    },
    "test_listings.py": {
        "test_a_changed_lead_on_the_listing_has_the_post_page_read_and_the_edit_mailed_at_the_next_check",
        "test_a_changed_lastmod_in_the_sitemap_has_the_post_page_read_and_the_edit_mailed",
        "test_a_retitled_listing_entry_has_the_post_page_read_and_the_edit_mailed_at_this_check",
        "test_a_changed_summary_in_the_feed_has_the_post_page_read_and_the_edit_mailed_at_this_check",
        "test_a_new_post_on_a_real_link_blog_is_one_event_and_an_unchanged_check_none",
        "test_a_new_story_on_a_news_index_is_one_event_and_an_unchanged_check_none",
        "test_an_unchanged_summary_feed_costs_no_post_page_read",
        "test_sources_test_finds_every_post_of_each_listing_shape",
        "test_sources_test_finds_every_post_of_real_front_pages",
        "test_sources_test_suggests_the_selectors_kind_with_an_example_when_nothing_is_found",
    },
    "test_real_blogs.py": {
        "test_a_dead_feed_is_not_asked_again_before_its_backoff_and_the_listing_still_finds_new_posts",
        "test_a_feed_that_was_read_before_and_now_fails_hands_the_check_to_the_listing",
        "test_a_json_feed_is_discovered_and_read_and_its_new_item_is_mailed",
        "test_an_auto_source_whose_advertised_feed_404s_finds_new_posts_with_one_warning_per_check",
        "test_sources_test_reads_the_listing_of_a_blog_whose_advertised_feed_404s",
        "test_the_extraction_libraries_are_not_imported_when_the_cli_starts",
    },
    "test_reliability_crash.py": ALL,
    "test_reliability_daemon.py": ALL,
    "test_reliability_smtp.py": {
        "test_a_sender_killed_between_the_servers_250_and_its_commit_sends_nothing_twice",
    },
    "test_scrapy_project.py": ALL,
    "test_secret.py": ALL,
    "test_signup.py": {
        "test_a_korean_reader_signs_up_confirms_changes_preferences_and_unsubscribes_in_korean",
        "test_signup_confirm_digest_preferences_unsubscribe_and_no_silent_readd",
    },
    "test_signup_limits.py": {
        "test_six_ips_of_one_network_and_eight_spellings_of_one_mailbox_get_few_mails_and_a_reader_their_digest",
        "test_six_ipv6_addresses_of_one_64_share_one_limit",
    },
    "test_signup_rendering.py": ALL,
    "test_stable_edits.py": {
        "test_a_flood_of_real_edits_is_held_then_published_by_a_check_that_sees_them_again",
        "test_a_real_edit_is_mailed_after_one_check_that_fetched_it_twice_and_listed_once",
        "test_a_rotating_ad_inside_eight_articles_mails_nothing_and_alerts_the_operator_once",
        "test_a_volatile_post_whose_ad_stops_and_article_is_edited_publishes_that_edit",
        "test_held_edits_whose_content_reverted_are_never_mailed",
        "test_the_daemon_mails_a_real_edit_once_and_no_rotating_ad_noise",
    },
    "test_startup.py": {
        "test_a_crawl_listens_on_no_socket_and_writes_no_scrapy_job_file",
        "test_commands_that_need_no_crawl_load_neither_scrapy_nor_alembic",
    },
    "test_storage_errors.py": ALL,
    "test_subscriber_import.py": {
        "test_a_200_kib_field_is_one_line_and_nothing_is_stored",
        "test_a_cadence_postwatch_does_not_have_is_refused_and_nothing_is_stored",
        "test_a_missing_file_is_one_line",
        "test_an_address_listed_twice_with_different_settings_is_refused",
        "test_an_unsubscribed_address_is_not_subscribed_again_by_an_import",
        "test_duplicates_are_counted_as_duplicates_and_changes_as_updates",
        "test_invalid_utf8_is_one_line_and_nothing_is_stored",
        "test_rows_without_a_header_and_every_column",
    },
    "test_suppression.py": {
        "test_the_cli_suppresses_a_dead_address_shows_it_and_refuses_to_add_it_again",
    },
    "test_sweeps.py": {
        "test_a_check_that_ends_with_its_304s_never_loads_scrapy",
        "test_a_failing_source_does_not_change_another_sources_result_in_the_same_sweep",
        "test_a_full_sweep_of_a_source_whose_listing_fails_asks_no_post_page",
        "test_new_posts_cost_one_request_each_beyond_the_listing_fetched_once",
        "test_retry_after_from_one_source_holds_the_host_for_every_source_on_it",
        "test_the_daemon_sweeps_many_sources_on_one_host_without_breaking_its_delay",
        "test_twenty_sources_on_one_host_keep_its_delay_on_the_first_pass_and_on_revalidation",
    },
    "test_web.py": {
        "test_a_slowloris_client_and_an_idle_keep_alive_connection_are_dropped_within_the_timeout",
        "test_a_taken_listen_address_is_one_clear_line",
        "test_malformed_requests_get_400_with_no_traceback_and_the_daemon_stays_healthy",
        "test_two_thousand_idle_connections_change_nothing_for_checks_and_mail",
    },
    "test_webhooks.py": {
        "test_429_waits_as_long_as_retry_after_says",
        "test_a_400_fails_for_good_and_is_not_retried",
        "test_a_500_then_a_200_delivers_exactly_once_after_a_retry",
        "test_a_receiver_that_answers_410_gone_is_suppressed_like_a_hard_bounce",
        "test_a_redirect_to_another_host_is_not_followed_one_on_the_same_host_is",
        "test_a_webhook_address_must_be_a_usable_url",
        "test_an_unreachable_receiver_is_retried",
        "test_email_and_webhook_subscribers_each_get_their_own",
        "test_postwatch_webhook_verify_checks_a_saved_delivery",
        "test_the_receiver_gets_signed_json_of_the_events",
        "test_the_receivers_check_refuses_a_replay_a_stale_timestamp_and_a_changed_body",
    },
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        listed = DAEMON_TESTS.get(item.path.name)
        if listed == ALL or (listed and item.originalname in listed) or item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.daemon)


def _leaves_out_daemons(config) -> bool:
    expression = (config.option.markexpr or "").replace(" ", "")
    return "notdaemon" in expression


def _refusing_subprocesses(item):
    """Fail a fast-tier test that starts a subprocess, in its own body or in a fixture it sets up
    (a module-scoped fixture is set up within the first test that uses it)."""
    import subprocess

    spawned: list[str] = []
    execute_child = subprocess.Popen._execute_child

    def refuse(self, args, *rest, **kwargs):
        command = " ".join(map(str, args)) if isinstance(args, (list, tuple)) else str(args)
        spawned.append(command)
        raise RuntimeError(f"{item.nodeid} starts a subprocess ({command[:120]}): list it in tests/conftest.py "
                           "DAEMON_TESTS")

    subprocess.Popen._execute_child = refuse
    return spawned, lambda: setattr(subprocess.Popen, "_execute_child", execute_child)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    return (yield from _guarded(item))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    return (yield from _guarded(item))


def _guarded(item):
    if item.get_closest_marker("daemon") or not _leaves_out_daemons(item.config):
        return (yield)
    spawned, restore = _refusing_subprocesses(item)
    try:
        result = yield
    finally:
        restore()
    if spawned:
        pytest.fail(f"{item.nodeid} started a subprocess ({spawned[0][:120]}): list it in tests/conftest.py "
                    "DAEMON_TESTS", pytrace=False)
    return result
