# NGC Triton with what the python-backend face_pipeline imports (the ONNX models themselves
# run under the image's onnxruntime backend on the GPU). 24.10 = server 2.51, the same
# server as the nvidia-pytriton wheel used on CPU hosts and in the tests.
FROM nvcr.io/nvidia/tritonserver:24.10-py3
# The same numpy, OpenCV and Pillow as pyproject.toml and the CPU image, so images decode
# the same everywhere. numpy<2: the 2.51 python backend stub returns empty tensors with
# numpy 2 (notes/triton-local.md §5); opencv 4.11.0.86 is the last wheel for numpy<2;
# pillow 12.3.0 is the newest with a wheel for this image's Python 3.10.
RUN pip install --no-cache-dir numpy==1.26.4 opencv-python-headless==4.11.0.86 pillow==12.3.0
