# Triton for hosts without a GPU: the tritonserver binary and python backend shipped in the
# nvidia-pytriton wheel (server 2.51), every model a python-backend model around onnxruntime,
# exactly as `make run` does locally (tools/triton_local.py).
FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1
# the python backend stub links the shared libpython3.11 of Debian
RUN apt-get update && apt-get install -y --no-install-recommends libpython3.11 curl \
    && rm -rf /var/lib/apt/lists/*
# versions as in pyproject.toml (one decoder everywhere)
RUN pip install numpy==1.26.4 onnxruntime==1.32.0 opencv-python-headless==4.11.0.86 pillow==12.3.0 \
        pydantic-settings==2.16.3 \
    && pip install --no-deps nvidia-pytriton==0.7.0
# its own uid: Triton only reads the model repository that the export job (uid 10001) writes
RUN useradd --create-home --uid 10002 triton
WORKDIR /app
COPY tools ./tools
COPY core ./core
COPY pipeline ./pipeline
RUN python -c "from tools.triton_local import prepare_backends; from pathlib import Path; prepare_backends(Path('/opt/triton/backends'))"
USER triton
EXPOSE 8000 8001 8002
ENTRYPOINT ["sh", "-c", "SP=$(python -c 'import site;print(site.getsitepackages()[0])') && LD_LIBRARY_PATH=$SP/nvidia_pytriton.libs exec $SP/pytriton/tritonserver/bin/tritonserver --backend-directory=/opt/triton/backends \"$@\"", "--"]
