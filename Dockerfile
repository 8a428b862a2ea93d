# One image for every Tiller service; compose.yaml picks the service with the command.
# BASE_IMAGE: any Python 3.11+ image whose `pip` installs into a directory on PATH. The CI's
# compose tier passes a Debian-built stand-in (tests/compose/), as no image registry is reached
# there; everywhere else the official image is the base.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY protos ./protos
COPY services ./services
# The gateway's files volume (compose.yaml) starts as this directory: the tiller user's.
RUN pip install . && useradd --system --uid 10001 tiller \
    && install -d -o tiller -g tiller -m 0700 /var/lib/tiller/files
USER tiller
ENTRYPOINT ["tiller"]
