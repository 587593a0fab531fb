# Face Analytics application image: two targets from one build.
#   api    -> `uvicorn api.main:app` (service face-api)
#   export -> `python -m export ...` (one-shot service export)
#   loadtest -> `locust` with face_analytics_client (service locust, profile loadtest)
# Multi-stage: wheels are built with compilers in the builder; the final images have none.
ARG PYTHON=python:3.11-slim-bookworm

FROM ${PYTHON} AS builder
RUN apt-get update && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml ./
COPY api ./api
COPY export ./export
COPY pipeline ./pipeline
COPY tools ./tools
COPY loadtests ./loadtests
COPY face_analytics_client ./face_analytics_client
COPY db ./db
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM ${PYTHON} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
RUN useradd --create-home --uid 10001 app
COPY --from=builder /wheels /wheels
RUN pip install --no-index --find-links=/wheels face-analytics && rm -rf /wheels
WORKDIR /app
COPY --chown=app:app api ./api
COPY --chown=app:app db ./db
COPY --chown=app:app pipeline ./pipeline

FROM runtime AS api
USER app
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --retries=6 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4).status == 200 else 1)"
CMD ["sh", "-c", "uvicorn api.main:app --host 0.0.0.0 --port 8000 --workers ${FA_WORKERS:-2} --no-access-log"]

FROM runtime AS export
COPY --chown=app:app export ./export
COPY --chown=app:app tools ./tools
COPY --chown=app:app triton_models ./triton_models
USER app
ENTRYPOINT ["python", "-m", "export"]
CMD ["--help"]

FROM runtime AS loadtest
RUN pip install locust==2.47.0
COPY --chown=app:app loadtests ./loadtests
USER app
ENTRYPOINT ["locust"]
