# syntax=docker/dockerfile:1
# Container image for retargeting-exporter.
#
#   docker build -t retargeting-exporter .
#   docker run --rm -p 9817:9817 --read-only \
#     -v "$PWD/config.yaml:/etc/retargeting-exporter/config.yaml:ro" \
#     -e SHOP_A_KEY retargeting-exporter
#
# tests/test_dockerfile.py lints this file with hadolint; tests/test_image.py builds it with
# buildah (PYTHON_IMAGE: a local Debian bookworm with its Python 3.11, as Docker Hub is out of the
# test machines' reach) and runs the image. See docs/deployment.md.

# Both stages use the same interpreter: the venv copied into the final stage links to it.
ARG PYTHON_IMAGE=python:3.11-slim

# --- builder: source -> wheel -> a venv holding only that wheel and its dependencies ----------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    WHEELHOUSE=/tmp/wheelhouse \
    VIRTUAL_ENV=/opt/retargeting-exporter
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY exporter/ exporter/
# The venv gets no pip of its own (--without-pip); the builder's pip installs into it. pip
# precompiles the .pyc files, so nothing has to be written at run time.
RUN pip wheel --no-deps --wheel-dir "$WHEELHOUSE" . \
 && python -m venv --without-pip "$VIRTUAL_ENV" \
 && pip --python "$VIRTUAL_ENV/bin/python" install "$WHEELHOUSE"/retargeting_exporter-*.whl

# --- final: the slim interpreter plus the venv; no compilers, no pip cache, no source ----------
FROM ${PYTHON_IMAGE}
# Keep in step with exporter/__init__.py (a test checks); CI passes the release version.
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="retargeting-exporter" \
      org.opencontainers.image.description="Prometheus exporter for the Retargeting.biz Traffic Source partners API" \
      org.opencontainers.image.source="https://github.com/retargeting-exporter/retargeting-exporter" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="MIT"
ENV VIRTUAL_ENV=/opt/retargeting-exporter \
    PATH=/opt/retargeting-exporter/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=builder /opt/retargeting-exporter /opt/retargeting-exporter
# Numeric, so Kubernetes can verify runAsNonRoot; the Helm chart uses the same IDs.
USER 65532:65532
EXPOSE 9817
# No curl in the image: the venv's python asks /-/healthy; any error or non-2xx exits 1.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9817/-/healthy', timeout=4)"]
ENTRYPOINT ["retargeting-exporter", "--config.file=/etc/retargeting-exporter/config.yaml"]
