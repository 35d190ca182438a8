"""Spiders of the postwatch Scrapy project."""
