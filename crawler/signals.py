"""How the crawl's components tell crawler.reports.ReportCollector what belongs in a report:
postwatch's own Scrapy signals, and the stats keys counted per source.

Signals are sent like Scrapy's own, `crawler.signals.send_catch_log(signal, **kwargs)`, with the
request's source (`request.meta["source"]`, None outside postwatch's spider) among the arguments.
"""

# A 200 answer to a conditional request carried new validators.
# Arguments: source, url (the key they are kept under), validators ((etag, last_modified)).
validators_received = object()

# A host's robots.txt was fetched or revalidated.
# Arguments: source, origin ("https://host[:port]"), body (b"" when there is none), fetched_at.
robots_txt_fetched = object()

# A request of a source was answered, or failed without an answer (status None).
# Arguments: source, exchange (state.records.Exchange).
exchange_done = object()


def source_stat(source: str, name: str) -> str:
    """The crawler.stats key of one source's count (e.g. source/link/request_count)."""
    return f"source/{source}/{name}"
