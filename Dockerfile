# syntax=docker/dockerfile:1
# agentq's image: one `agentq` command per process (serve, worker, beat, flower, db upgrade),
# as docker-compose.yml runs them. Build: docker build -t agentq .

ARG PYTHON_VERSION=3.12

# -- build: wheels of agentq and of every dependency --------------------------------------------
FROM python:${PYTHON_VERSION}-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY app app
COPY worker worker
COPY handlers handlers
COPY migrations migrations
# Every dependency ships wheels for CPython on Linux, so nothing is compiled here either.
RUN pip wheel --wheel-dir /wheels ".[flower]"

# -- runtime: the wheels installed, no compiler, no source tree ---------------------------------
FROM python:${PYTHON_VERSION}-slim

LABEL org.opencontainers.image.title="agentq" \
      org.opencontainers.image.description="Durable jobs for AI agents, with human approval checkpoints, on Celery, Postgres and Redis" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="MIT"

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    AGENTQ_HOME=/var/lib/agentq \
    PORT=8000

# The wheels are mounted from the build stage, not copied: no layer keeps them.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels /wheels/*.whl

# A user of its own, owning only AGENTQ_HOME: beat's schedule and the jobs' workspaces
# ($AGENTQ_HOME/workspaces, a volume shared by web and workers in docker-compose.yml).
RUN useradd --system --no-log-init --uid 10001 --user-group --no-create-home \
        --home-dir /var/lib/agentq --shell /usr/sbin/nologin agentq \
    && mkdir -p /var/lib/agentq/workspaces \
    && chown -R agentq:agentq /var/lib/agentq
USER 10001:10001
WORKDIR /var/lib/agentq

# web (PORT), Flower, a worker's metrics (WORKER_METRICS_PORT)
EXPOSE 8000 5555 9808

# Liveness of the web (`agentq serve`): /api/health answers while the process serves. There is
# no curl in a slim image; Python is there. Other commands turn it off in docker-compose.yml.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/api/health' % os.environ.get('PORT', '8000'), timeout=4)"]

ENTRYPOINT ["agentq"]
CMD ["serve"]
