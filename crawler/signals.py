"""postwatch's own Scrapy signals: what the downloader middlewares learn that belongs in a
crawl report. Sent like Scrapy's own, `crawler.signals.send_catch_log(signal, **kwargs)`, with
the request's source (`request.meta["source"]`, None outside postwatch's spider) among the
arguments; crawler.reports.ReportCollector listens."""

# A 200 answer to a conditional request carried new validators.
# Arguments: source, url (the key they are kept under), validators ((etag, last_modified)).
validators_received = object()

# A host's robots.txt was fetched or revalidated.
# Arguments: source, origin ("https://host[:port]"), body (b"" when there is none), fetched_at.
robots_txt_fetched = object()
