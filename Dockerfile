# catalog-enricher: the service image. Build: docker build -t catalog-enricher .
# Run: docker run -e DATABASE_URL=postgresql://... -p 8080:8080 catalog-enricher

# --- build stage: a virtualenv with the service and its dependencies -----------------------
FROM python:3.12-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
# A C compiler for the transform's extension (service/_speedups.c); the runtime stage has none.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY service ./service
COPY migrations ./migrations
# The last check fails the build if the extension was not compiled (pip would go on without it).
RUN pip install --no-cache-dir . \
    && python -c "import service.storage.migrations as m; print(m.migrations_dir())" \
    && python -c "from service import _speedups"

# --- runtime stage: no compilers, no sources, a user without privileges ----------------------
FROM python:3.12-slim-bookworm
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    ENRICHER_HOST=0.0.0.0 \
    ENRICHER_PORT=8080
RUN groupadd --system --gid 10001 enricher \
    && useradd --system --uid 10001 --gid enricher --home-dir /home/enricher --create-home enricher
COPY --from=build /opt/venv /opt/venv
USER 10001:10001
WORKDIR /home/enricher
EXPOSE 8080
# The slim image has no curl: ask /healthz with the interpreter that is already there.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('ENRICHER_PORT', '8080') + '/healthz', timeout=2)"]
# Set DATABASE_URL in production; without it the service starts its embedded Postgres in
# /home/enricher/.local/share (fine for a demo, gone with the container).
CMD ["catalog-enricher", "serve"]
