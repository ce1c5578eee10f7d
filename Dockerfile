# Chappe container image.
#
#   docker build -t chappe .
#   docker run --init -p 8008:8008 -v chappe-data:/var/lib/chappe \
#     -e CHAPPE_SERVER_NAME=example.gouv.fr \
#     -e CHAPPE_DATABASE_URL=postgres://chappe:secret@db:5432/chappe \
#     chappe
#
# Without CHAPPE_DATABASE_URL the server falls back to its embedded default:
# a private PostgreSQL cluster under /var/lib/chappe/postgres, started and
# stopped by Chappe itself with the PostgreSQL 15 binaries installed below.
# That is for trying it out; production should use a real database.

# --- build ---------------------------------------------------------------
FROM golang:1.26-bookworm AS build

WORKDIR /src
# Dependencies first, so that editing the code does not download them again.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /chappe ./cmd/chappe

# --- runtime -------------------------------------------------------------
FROM debian:bookworm-slim

# ca-certificates: outbound TLS (federation, allowlist URLs).
# postgresql-15: server binaries (initdb, pg_ctl, postgres) for the embedded
# default. postgresql-common is installed first and told not to create the
# distribution's own "main" cluster, which Chappe would never use.
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends ca-certificates postgresql-common; \
    sed -ri 's/^#?\s*create_main_cluster\s*=.*/create_main_cluster = false/' /etc/postgresql-common/createcluster.conf; \
    apt-get install -y --no-install-recommends postgresql-15; \
    rm -rf /var/lib/apt/lists/*

# Chappe never runs as root (PostgreSQL refuses to anyway).
RUN set -eux; \
    groupadd --system chappe; \
    useradd --system --gid chappe --home-dir /var/lib/chappe --no-create-home \
        --shell /usr/sbin/nologin chappe; \
    install -d -o chappe -g chappe -m 0750 /var/lib/chappe

COPY --from=build /chappe /usr/local/bin/chappe
COPY chappe.example.yaml /etc/chappe/chappe.example.yaml

# Settings come from the environment (see chappe.example.yaml for all of
# them). A config file can be mounted and named with CHAPPE_CONFIG.
ENV CHAPPE_DATA_DIR=/var/lib/chappe \
    CHAPPE_CLIENT_API_LISTEN=0.0.0.0:8008

USER chappe
WORKDIR /var/lib/chappe
VOLUME ["/var/lib/chappe"]

# 8008: client API (put a TLS reverse proxy in front).
# 8448: federation, reserved for when the federation listener lands.
EXPOSE 8008 8448

# Chappe stops on SIGTERM, shutting down the embedded PostgreSQL if it
# started one. Run with --init (or `init: true` in compose) so that exited
# child processes are reaped.
ENTRYPOINT ["/usr/local/bin/chappe"]
CMD ["serve"]
