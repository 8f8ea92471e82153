"""Data modules: the only place SQL lives. Each function owns its statement (and transaction)."""
