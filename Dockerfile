# The hpmf streaming service (`hpmf stream`) and its other commands, as a
# non-root image. Build from the repository root:
#
#   docker build -t hpmf:0.1.0 .
#   docker run --rm hpmf:0.1.0 --help
#
# Two stages: the first installs the locked dependencies (every file checked
# against its hash in requirements.lock) and the project into a virtual
# environment; the second copies only that environment onto a fresh base and
# runs as an unprivileged user. No compiler, pip cache or source tree is left
# in the final image.
#
# torch: PyPI's Linux x86_64 torch wheel is the CUDA build (it pulls the
# nvidia-* wheels, several GB). The service runs on the CPU; a CPU-only torch
# wheel is not published on PyPI, so the lock pins PyPI's and the image is
# large. docs/operations.md says how to swap in a CPU-only wheel from a
# mirror you trust.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/hpmf
COPY requirements.lock ./
RUN /opt/hpmf/bin/pip install --require-hashes --no-deps -r requirements.lock
COPY pyproject.toml README.md ./
COPY model ./model
COPY streamer ./streamer
# --no-deps: everything it needs came from the lock above; --no-build-isolation:
# setuptools is in the lock too, so nothing unhashed is downloaded here.
RUN /opt/hpmf/bin/pip install --no-deps --no-build-isolation . \
    && /opt/hpmf/bin/python -c "import streamer.service.worker, model.online"

FROM ${PYTHON_IMAGE} AS runtime
ARG HPMF_VERSION=0.1.0
ARG HPMF_REVISION=unknown
LABEL org.opencontainers.image.title="hpmf" \
      org.opencontainers.image.description="Streaming HPMF recommender: Kafka watch events in, Bayesian user posteriors in Redis out" \
      org.opencontainers.image.version="${HPMF_VERSION}" \
      org.opencontainers.image.revision="${HPMF_REVISION}"
RUN groupadd --system --gid 10001 hpmf \
    && useradd --system --uid 10001 --gid hpmf --home-dir /home/hpmf --create-home --shell /usr/sbin/nologin hpmf
COPY --from=build /opt/hpmf /opt/hpmf
ENV PATH=/opt/hpmf/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HPMF_BUILD_REVISION=${HPMF_REVISION} \
    HPMF_METRICS_HOST=0.0.0.0 \
    HPMF_METRICS_PORT=9108
# Secrets (SASL password, Redis password, TLS key password) are read from
# files in /run/secrets/hpmf when it exists (a mounted Secret), one file per
# setting: hpmf_kafka_sasl_password, hpmf_redis_password, ...
USER 10001:10001
WORKDIR /home/hpmf
EXPOSE 9108
ENTRYPOINT ["hpmf"]
CMD ["stream"]
