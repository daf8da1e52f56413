# syntax=docker/dockerfile:1
# finetune-service images: one recipe, two targets.
#
#   docker build --target api    -t finetune-api .
#   docker build --target worker -t finetune-worker .        # CPU PyTorch (default)
#   docker build --target worker --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 \
#                -t finetune-worker:cuda .                   # CUDA PyTorch for GPU hosts
#
# pyproject.toml stays the one list of dependencies: docker/requirements.py splits it into the API's
# (no torch stack: the API process never imports torch) and the worker's (torch from TORCH_INDEX_URL first).
# docker-compose.yml builds both; see docs/deploy.md.

ARG PYTHON_VERSION=3.11

# --- base: Python, a non-root user, the data folder ----------------------------------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    FINETUNE_HOME=/data \
    HF_HOME=/data/hf-cache
# A fixed uid/gid so files on shared volumes keep one owner across images and machines; /data is created
# here, owned by that user, so a fresh named volume mounted on it starts writable.
RUN groupadd --system --gid 10001 finetune \
 && useradd --system --uid 10001 --gid finetune --home-dir /home/finetune --create-home --shell /usr/sbin/nologin finetune \
 && mkdir -p /data \
 && chown finetune:finetune /data

# --- requirements: pyproject.toml -> requirement files per image ---------------------------------------
FROM base AS requirements
WORKDIR /build
COPY pyproject.toml docker/requirements.py ./
RUN python requirements.py pyproject.toml --out /build/req

# --- api-deps: the API's libraries, no torch -----------------------------------------------------------
FROM base AS api-deps
COPY --from=requirements /build/req/requirements-api.txt /tmp/req/
RUN python -m venv "$VIRTUAL_ENV" \
 && pip install -r /tmp/req/requirements-api.txt

# --- worker-deps: torch from the chosen index, then the rest -------------------------------------------
FROM base AS worker-deps
# CPU wheels by default; a CUDA index (https://download.pytorch.org/whl/cu128, ...) for GPU hosts.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
COPY --from=requirements /build/req/ /tmp/req/
RUN python -m venv "$VIRTUAL_ENV" \
 && pip install --index-url "$TORCH_INDEX_URL" -r /tmp/req/torch.txt \
 && pip install -r /tmp/req/requirements-worker.txt

# --- api: uvicorn + the FastAPI app -------------------------------------------------------------------
FROM base AS api
COPY --from=api-deps /opt/venv /opt/venv
WORKDIR /app
# The source (filtered by .dockerignore: no tests, caches or secrets), installed in place so alembic.ini
# and the migrations sit beside the code.
COPY . /app
RUN pip install --no-deps -e /app \
 && python -c "import app.main" \
 && python -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('torch') is not None)"
USER finetune
EXPOSE 8000
# /health answers while the process serves; compose waits on it before reporting the stack up.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]
CMD ["uvicorn", "app.main:app", "--host", "0.0.0.0", "--port", "8000", "--proxy-headers", "--forwarded-allow-ips", "*"]

# --- worker: Celery worker running the training core ---------------------------------------------------
FROM base AS worker
# torch.compile's CPU backend (inductor) compiles C++ at run time: it needs g++.
RUN apt-get update \
 && apt-get install -y --no-install-recommends g++ \
 && rm -rf /var/lib/apt/lists/*
COPY --from=worker-deps /opt/venv /opt/venv
WORKDIR /app
COPY . /app
RUN pip install --no-deps -e /app \
 && python -c "import torch, worker.tasks"
# The worker's main process touches this file every few seconds (worker/healthcheck.py); stale means hung.
ENV FINETUNE_WORKER_HEARTBEAT_FILE=/tmp/finetune-worker.heartbeat
USER finetune
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-m", "worker.healthcheck", "--max-age", "90"]
CMD ["finetune", "worker"]
