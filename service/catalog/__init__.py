"""Catalog writes in bulk: streamed import (NDJSON and CSV readers, staging, one upsert), its
command-line runner, and JSON Merge Patch for item PATCH. May import enrichment, resolution,
storage, runtime and the shared vocabulary; not the HTTP layer nor the adapters."""
