# A STAND-IN for the official redis:7.4-alpine, which no registry here serves: Debian's real
# redis-server (7.0), laid out as the official image is (data in /data, run as user redis,
# protected mode off). Used only by the CI's compose tier (tests/compose/standins.yaml).
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN apt-get update && apt-get install -y --no-install-recommends redis-server \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir /data && chown redis:redis /data
COPY redis-entrypoint.sh /usr/local/bin/
WORKDIR /data
USER redis
EXPOSE 6379
ENTRYPOINT ["redis-entrypoint.sh"]
CMD ["redis-server"]
