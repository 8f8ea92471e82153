"""HTTP handlers, one module per area. Handlers call adapters and data functions; they never hold
SQL."""
