# One image for every Tiller service; compose.yaml picks the service with the command.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY protos ./protos
COPY services ./services
RUN pip install . && useradd --system --uid 10001 tiller
USER tiller
ENTRYPOINT ["tiller"]
