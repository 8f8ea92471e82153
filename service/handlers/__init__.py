"""HTTP handlers, one module per area. Handlers call data functions; they never hold SQL."""
