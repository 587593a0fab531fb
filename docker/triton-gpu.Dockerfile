# NGC Triton with what the python-backend face_pipeline imports (the ONNX models themselves
# run under the image's onnxruntime backend on the GPU).
FROM nvcr.io/nvidia/tritonserver:24.10-py3
# numpy<2: the 2.51 python backend stub returns empty tensors with numpy 2 (notes/triton-local.md §5);
# opencv 4.11.0.86 is the last wheel that accepts numpy<2
RUN pip install --no-cache-dir "numpy<2" opencv-python-headless==4.11.0.86 pillow==11.3.0
