"""Serving saved indexes over HTTP (``llmret serve``): the app, its micro-batcher and its search page."""
