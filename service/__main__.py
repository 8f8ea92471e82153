"""`python -m service` is the same as the `catalog-enricher` console script."""

from service.cli import main

raise SystemExit(main())
