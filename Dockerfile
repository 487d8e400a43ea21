# syntax=docker/dockerfile:1
# The courtlink image: one image for every process (`courtlink serve`, `signaling`, `media-node`, `recorder`),
# chosen by the command. Slim Debian with Python 3.11, the project in a venv, run as an unprivileged user.
# Deployment files that use it: deploy/compose.yaml, deploy/k8s/ (docs/operations.md, "Topology").
#
#   docker build -t courtlink:0.1.0 .
#   docker run --rm -p 8080:8080 -v courtlink-data:/var/lib/courtlink courtlink:0.1.0   # all-in-one serve

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# Every dependency ships manylinux wheels (aiortc, av with its own FFmpeg, cryptography, numpy, uvloop). gcc, in
# this build stage only, compiles the media node's C parts (media/_fastpath.c, media/_rate.c, setup.py; without
# them the node sends and receives through its Python loops and aiortc's own bandwidth estimator). Only what
# the package needs is copied (.dockerignore keeps tests, bench and .git out).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md setup.py ./
COPY rooms/ rooms/
COPY protocol/ protocol/
COPY signaling/ signaling/
COPY media/ media/
COPY recorder/ recorder/
COPY courtlink/ courtlink/
# The project without its test extras, compiled to bytecode (the root filesystem may be read-only at run time),
# into a venv that is copied whole into the runtime stage.
RUN python -m venv /opt/courtlink \
    && /opt/courtlink/bin/pip install . \
    && /opt/courtlink/bin/python -c "import courtlink.cli, media, recorder, signaling, media._fastpath, media._rate, uvloop"

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="courtlink" \
      org.opencontainers.image.description="Remote-hearing orchestrator: signaling, SFU media node, sealed recorder" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/courtlink/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# A fixed uid/gid (10001), numeric in USER so Kubernetes' runAsNonRoot can check it; no login shell, no home.
RUN groupadd --system --gid 10001 courtlink \
    && useradd --system --uid 10001 --gid courtlink --no-create-home --home-dir /var/lib/courtlink \
       --shell /usr/sbin/nologin courtlink \
    && install -d -o courtlink -g courtlink -m 0700 /var/lib/courtlink \
    && install -d -o root -g root -m 0755 /etc/courtlink
COPY --from=build /opt/courtlink /opt/courtlink
COPY deploy/healthcheck.py /opt/courtlink/healthcheck.py
WORKDIR /var/lib/courtlink
# The data dir: store (serve only), first-run keys, recorder keys and recordings. Mount a volume here.
VOLUME ["/var/lib/courtlink"]
# Signaling's HTTP port (behind a TLS proxy). Media nodes run on the host's network (UDP range, frame pipe).
EXPOSE 8080
USER 10001:10001
# GET /healthz for the processes that serve HTTP (serve, signaling); the others pass while they run
# (a media node's liveness is its heartbeat in Redis, a recorder's its sessions).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "/opt/courtlink/healthcheck.py"]
ENTRYPOINT ["courtlink"]
# Settings come from a mounted file (COURTLINK_CONFIG=/etc/courtlink/courtlink.toml) and COURTLINK_* variables;
# the default command is the all-in-one server on the data volume.
CMD ["serve", "--host", "0.0.0.0", "--data-dir", "/var/lib/courtlink"]
