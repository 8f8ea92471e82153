"""catalog-enricher: resolves recommended item IDs into message content from a Postgres catalog."""

__version__ = "0.1.0"
