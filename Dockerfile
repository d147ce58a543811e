# syntax=docker/dockerfile:1
# The GoPherQ image: `gopherq run` (the worker, the default command) or `gopherq web` (the dashboard).
# Build: docker build -t gopherq .   Run: docker compose up (compose.yaml), or see docs/deployment.md.
#
# Environment (every setting has a GOPHERQ_<SECTION>__<KEY> variable, see docs/configuration.md):
#   GOPHERQ_REDIS__URL          redis://host:6379/0 (or rediss://...); REDIS_ADDRESS=host:port works too
#   GOPHERQ_REDIS__PASSWORD     the Redis password (GOPHERQ_REDIS__USERNAME for an ACL user)
#   GOPHERQ_QUEUE__NAME         the queue to serve (default my_tasks_queue)
#   GOPHERQ_WORKER__CONCURRENCY tasks in flight per process (default 50)
#   GOPHERQ_CONFIG              a TOML file to read first (mount it, e.g. at /etc/gopherq/gopherq.toml)
# The image has no redis-server: point it at a Redis (the embedded mode is for development machines).

ARG PYTHON_VERSION=3.12

# -- builder: make the wheel and a virtual environment with it and its dependencies ------------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
RUN pip install build
COPY pyproject.toml MANIFEST.in README.md CHANGELOG.md ./
COPY gopherq ./gopherq
# Every dependency ships manylinux wheels (hiredis, orjson, uvloop included): nothing is compiled here.
RUN python -m build --wheel --outdir /dist . \
 && python -m venv /opt/gopherq \
 && /opt/gopherq/bin/pip install --only-binary=:all: "$(ls /dist/gopherq-*.whl)[fast]"

# -- final: the interpreter, the virtual environment, a non-root user; no compiler, no pip cache, no sources ----
FROM python:${PYTHON_VERSION}-slim-bookworm
LABEL org.opencontainers.image.title="GoPherQ" \
      org.opencontainers.image.description="A distributed task queue on Redis whose first-class task is an HTTP call" \
      org.opencontainers.image.licenses="MIT"
RUN groupadd --system --gid 10001 gopherq \
 && useradd --system --uid 10001 --gid gopherq --home-dir /home/gopherq --create-home --shell /usr/sbin/nologin gopherq
COPY --from=builder /opt/gopherq /opt/gopherq
ENV PATH=/opt/gopherq/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
WORKDIR /home/gopherq
# Healthy = Redis answers, the Lua scripts load and the Redis user may run every command GoPherQ needs.
HEALTHCHECK --interval=30s --timeout=10s --start-period=15s --retries=3 CMD ["gopherq", "ping"]
# SIGTERM starts a graceful shutdown (running tasks get worker.shutdown_timeout, 25 s by default): give
# `docker stop` a longer timeout than that (compose.yaml sets stop_grace_period).
STOPSIGNAL SIGTERM
ENTRYPOINT ["gopherq"]
CMD ["run"]
