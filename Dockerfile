# dcgan_tf on NVIDIA GPUs. The base image carries TensorFlow 2.21 built for CUDA 12, with its CUDA and
# cuDNN libraries, so only our package and its pure-Python needs are installed on top.
#   docker build -t dcgan_tf .
#   docker run --gpus all -v $PWD/runs:/app/runs dcgan_tf --flagfile=configs/demo.cfg
FROM tensorflow/tensorflow:2.21.0-gpu

WORKDIR /app
COPY setup.cfg pyproject.toml README.md ./
COPY dcgan_tf ./dcgan_tf
COPY configs ./configs
# The base image's TensorFlow satisfies the requirement, so pip keeps it rather than pulling another.
RUN pip install --no-cache-dir . && python -c "import dcgan_tf.main"

ENTRYPOINT ["python", "-m", "dcgan_tf.main"]
CMD ["--flagfile=configs/demo.cfg"]
