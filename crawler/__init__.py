"""postwatch's Scrapy project: the spider, its middlewares and pipeline, and the extraction code."""
