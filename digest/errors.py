"""Digest errors the CLI and the daemon turn into one line, importable without the rendering
stack (Jinja2, css-inline, nh3, lxml: 0.05-0.1 s of start-up) that commands which never render
a digest must not load."""


class TemplateProblem(ValueError):
    """A template that cannot be rendered (syntax, an undefined name, or an operation the
    sandbox refuses); str() is one line naming the template file."""
