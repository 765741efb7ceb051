# syntax=docker/dockerfile:1
#
# One image for the three processes: `selector run` (default), `selector labels` and `selector serve-model`.
#
#   docker build -t selector:0.1.0 .
#   docker build --build-arg TORCH_INDEX=<PyTorch's CPU wheel index URL> -t selector:0.1.0 .
#
# TORCH_INDEX is empty by default, and pip then takes torch==2.13.0 from the default index, whose Linux wheel
# pulls the CUDA packages (several GB). Pass PyTorch's CPU-only wheel index at build time to keep the image
# small: it is an extra index, so every other package still comes from the default one.
#
# The runtime is built to run with a read-only root filesystem (Kubernetes readOnlyRootFilesystem, compose
# read_only): everything written goes to /var/lib/selector (volumes: the label loop's dataset, the model
# registry) or to /tmp (HOME and TMPDIR; mount an emptyDir or a tmpfs there).

# Pin the patch release (pin the digest too in a production build).
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder

ARG TORCH_INDEX=""
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH

# The virtual environment is copied to the runtime stage as it is: same path in both stages.
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY selector ./selector
COPY connectors ./connectors
RUN pip install ${TORCH_INDEX:+--extra-index-url "$TORCH_INDEX"} '.[serve,train]'


FROM ${PYTHON_IMAGE}

LABEL org.opencontainers.image.title="selector" \
      org.opencontainers.image.description="Streaming selective-sampling monitor for production ML models on Kafka" \
      org.opencontainers.image.licenses="Apache-2.0"

RUN groupadd --system --gid 10001 selector \
    && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home \
       --shell /usr/sbin/nologin selector \
    && mkdir -p /etc/selector /var/lib/selector/data /var/lib/selector/models \
    && chown -R 10001:10001 /var/lib/selector

COPY --from=builder /opt/venv /opt/venv
# The documented defaults; deployments mount their own file here or override keys with SELECTOR_<SECTION>__<KEY>.
COPY config.yaml /etc/selector/config.yaml

# SELECTOR_METRICS__HOST: Prometheus and the health checks reach the endpoint from outside the loopback.
# HEALTHCHECK_PORT is deliberately not SELECTOR_-prefixed (those are config overrides): set it to 9465 for
# `labels` and 9466 for `serve-model`.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TMPDIR=/tmp \
    SELECTOR_METRICS__HOST=0.0.0.0 \
    HEALTHCHECK_PORT=9464

USER 10001:10001
WORKDIR /var/lib/selector
# New named volumes are initialised from these directories, so they start owned by uid 10001.
VOLUME ["/var/lib/selector/data", "/var/lib/selector/models"]

# metrics, /healthz and /readyz of: the monitor, the label loop, the inference connector
EXPOSE 9464 9465 9466

# No curl in the slim image: urlopen raises (exit 1) on a 503 or a refused connection.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('HEALTHCHECK_PORT', '9464') + '/healthz', timeout=4)"

# SIGTERM drains the batch in hand and commits: give it the time (compose stop_grace_period, k8s
# terminationGracePeriodSeconds).
STOPSIGNAL SIGTERM
ENTRYPOINT ["selector"]
CMD ["run", "-c", "/etc/selector/config.yaml"]
