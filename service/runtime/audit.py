"""The audit log: one JSON line for every admin write, whoever makes it (HTTP or the CLI).

Admin writes are the ones that change who may do what or what the service serves: keys (create,
revoke, rotate), tenants (create, limit), recommenders, catalogs, and bulk imports. Item writes
are data, not administration, and are not audited (the access log has them). A line says who
(`tenant` and `key`, the key's public prefix; for the CLI `via: "cli"` and the operating-system
user), what (`action`), which (`target`), and the `outcome` (`ok`, `refused` for a 4xx, `failed`),
with the HTTP `status` and `request_id` where there is one. Never a key or its hash.

The `service.audit` logger is at INFO whatever `ENRICHER_LOG_LEVEL` says, and each line is flushed
at once: an audit line must neither be filtered out nor sit in a buffer when the process dies.
"""

from __future__ import annotations

import logging
from typing import Any

from service.runtime.logs import flush_log_lines

log = logging.getLogger("service.audit")
log.setLevel(logging.INFO)


def outcome_of(status: int) -> str:
    return "ok" if status < 400 else "refused" if status < 500 else "failed"


def audit(action: str, *, via: str, tenant: str | None, key: str | None, target: str | None,
          outcome: str, **details: Any) -> None:
    """Write one audit line (`details`: e.g. status, request_id, user, scopes)."""
    log.info("admin write", extra={"audit": True, "via": via, "tenant": tenant, "key": key,
                                   "action": action, "target": target, "outcome": outcome,
                                   **details})
    flush_log_lines()
