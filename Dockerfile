# One image for every Python service of StreamPulse (producer, processor, ingestor, api, dashboard,
# db-init); docker-compose.yml gives each service its command.
#
#   docker build -t streampulse .
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 -t streampulse:gpu .
FROM python:3.11-slim

# torch comes from PyTorch's CPU wheel index: the default PyPI wheel pulls ~2 GB of CUDA libraries
# that a CPU container never uses. Pass another index (cu128, ...) for a GPU image.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HOME=/home/app/.cache/huggingface

# A non-root user; the HF cache and data dirs exist (and belong to it) before volumes are mounted,
# so a fresh named volume inherits that ownership.
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin app \
    && mkdir -p /app/data "$HF_HOME" \
    && chown -R app:app /app /home/app

WORKDIR /app

# Dependencies first (pinned in requirements.txt), so code edits do not reinstall them.
COPY requirements.txt .
RUN TORCH_PIN="$(grep -E '^torch==' requirements.txt)" \
    && pip install --index-url "$TORCH_INDEX_URL" "$TORCH_PIN" \
    && pip install -r requirements.txt

# Only the runtime packages travel (.dockerignore allow-lists them).
COPY --chown=app:app . .

USER app
EXPOSE 8000 8501

# Without a compose command: the whole product, embedded (in-process bus, SQLite under /app/data).
CMD ["python", "-m", "pipeline", "run", "--no-ui"]
