# A STAND-IN for the official nginx:1.27-alpine, which no registry here serves: Debian's real
# nginx (1.22, nginx-light: SSL, HTTP/2, gRPC proxying), laid out as the official image is:
# server blocks from /etc/nginx/conf.d/, logs to the container's output, `daemon off`. Used
# only by the CI's compose tier (tests/compose/standins.yaml).
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN apt-get update && apt-get install -y --no-install-recommends nginx-light wget \
    && rm -rf /var/lib/apt/lists/* /etc/nginx/sites-enabled/* \
    && ln -sf /dev/stdout /var/log/nginx/access.log \
    && ln -sf /dev/stderr /var/log/nginx/error.log
STOPSIGNAL SIGQUIT
CMD ["nginx", "-g", "daemon off;"]
