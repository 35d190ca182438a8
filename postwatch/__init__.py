"""postwatch: watch blogs for new, edited and removed posts and email subscribers a digest."""
__version__ = "0.1.0"
