"""The optional C extension (service/_speedups.c), or None.

`pip install` compiles it where a C compiler is found; where it is absent, or the environment sets
CATALOG_ENRICHER_NO_EXTENSIONS to a non-empty value (as aiohttp's AIOHTTP_NO_EXTENSIONS), the
pure-Python path serves instead. Both answer every event identically (tests/test_speedups.py);
the C one spends a fraction of the time on the transform's per-endpoint work.
"""

from __future__ import annotations

import os
from types import ModuleType

native: ModuleType | None = None
if not os.environ.get("CATALOG_ENRICHER_NO_EXTENSIONS"):
    try:
        from service import _speedups as native
    except ImportError:  # not compiled here: the pure-Python path
        native = None
