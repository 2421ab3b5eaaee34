"""Jinja2 templates of generated artifacts (installed as `roigen.templates`)."""
