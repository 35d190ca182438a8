"""postwatch's Scrapy project: the spider, its middlewares, the report collector, the kinds of
source and the extraction code."""
