"""Data modules: the only place SQL lives, and every connection: the pool and its codecs (`db`),
what a failing Postgres looks like (`db_faults`), migrations, the embedded Postgres, and one module
of named statements per table group. Each function owns its statement (and transaction). May
import runtime and the shared vocabulary, nothing above. A new item field: a migration, the
column in `items.py` here, and `service/items.py`."""
