# docker-keepalived: keepalived supervised by a Python process that watches Docker and is PID 1.
# Build: DOCKER_BUILDKIT=1 docker build -t docker-keepalived .
# (behind a TLS-intercepting proxy, add: --secret id=ca,src=/etc/ssl/certs/ca-certificates.crt)

FROM debian:bookworm-slim AS build
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md LICENSE /src/
COPY supervisor /src/supervisor
RUN --mount=type=secret,id=ca,required=false \
    if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi \
    && python3 -m venv /opt/keepalived-supervisor \
    && /opt/keepalived-supervisor/bin/pip install --no-cache-dir --disable-pip-version-check /src \
    && /opt/keepalived-supervisor/bin/pip uninstall -y -q pip setuptools \
    && find /opt/keepalived-supervisor -name __pycache__ -prune -exec rm -rf {} +

FROM debian:bookworm-slim
# The version lives in supervisor/__init__.py alone; scripts/lib.sh passes it here for the label.
ARG VERSION=unknown
LABEL org.opencontainers.image.title="docker-keepalived" \
      org.opencontainers.image.description="Virtual IPs for Docker and Rancher front ends: keepalived driven by Docker events and health probes" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.base.name="debian:bookworm-slim"
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends keepalived python3 \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /usr/share/doc/* /usr/share/man/* /etc/keepalived/keepalived.conf \
    && useradd --system --no-create-home --shell /usr/sbin/nologin keepalived_script
COPY --from=build /opt/keepalived-supervisor /opt/keepalived-supervisor
COPY docker/status /usr/local/bin/status
COPY docker/entrypoint /usr/local/bin/docker-entrypoint
ENV PATH=/opt/keepalived-supervisor/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    RUN_DIR=/run/keepalived-supervisor
# Healthy while the supervisor runs and its keepalived is up (status exits 0); see `status --help`.
HEALTHCHECK --interval=10s --timeout=5s --start-period=15s --retries=2 CMD ["keepalived-supervisor", "status", "--quiet"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["docker-entrypoint"]
CMD ["run"]
