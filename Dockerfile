# sipwake in a container: docs/operations.md ("Docker") says how to run it.
#
#   docker build -t sipwake .
#   docker run --network host -e SIPWAKE_SIP_DOMAIN=example.com \
#     -e SIPWAKE_SIP_SECRET=$(openssl rand -hex 32) -v sipwake:/var/lib/sipwake sipwake
#
# Configuration: /etc/sipwake/sipwake.toml (the example file, every key at its default;
# mount your own over it) and SIPWAKE_* variables, which win over the file.
# tests/test_packaging.py checks this file against pyproject.toml.

FROM python:3.11-slim AS build
# a C compiler in the build stage only: the hot path is compiled with mypyc (setup.py)
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md LICENSE ./
COPY sipwake ./sipwake
RUN python -m venv /opt/sipwake \
 && /opt/sipwake/bin/pip install --no-cache-dir --disable-pip-version-check . \
 && /opt/sipwake/bin/sipwake version | grep -qx "parser: compiled (mypyc)"

FROM python:3.11-slim
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/sipwake --create-home \
      --shell /usr/sbin/nologin sipwake
COPY --from=build /opt/sipwake /opt/sipwake
COPY sipwake.example.toml /etc/sipwake/sipwake.toml
# Listen on every interface inside the container; keep the SQLite database (the default
# store) in the volume. Set SIPWAKE_STORE_URL=postgresql://… to use PostgreSQL instead.
ENV PATH=/opt/sipwake/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    SIPWAKE_SIP_LISTEN="udp:0.0.0.0:5060,tcp:0.0.0.0:5060" \
    SIPWAKE_HTTP_LISTEN="0.0.0.0:8080" \
    SIPWAKE_STORE_URL="sqlite:////var/lib/sipwake/sipwake.db"
USER sipwake
WORKDIR /var/lib/sipwake
VOLUME ["/var/lib/sipwake"]
# SIP over UDP and TCP, SIP over TLS (when a tls: listener is configured), the HTTP API
EXPOSE 5060/udp 5060/tcp 5061/tcp 8080/tcp
# /healthz answers 200 while the store answers (plain HTTP: with [http] tls_cert set,
# point a health check of your own at https://).
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; port = os.environ.get('SIPWAKE_HTTP_LISTEN', '0.0.0.0:8080').rsplit(':', 1)[1]; urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=4)"]
# SIGTERM: calls and requests in flight are answered and writes flushed within 10 s
# (docker stop waits 10 s by default: give it --time 15, compose stop_grace_period).
STOPSIGNAL SIGTERM
ENTRYPOINT ["sipwake"]
CMD ["serve", "--config", "/etc/sipwake/sipwake.toml"]
