"""onetap server: ingest, store, HTTP API, dashboard and central pull."""

__version__ = "0.1.0"
