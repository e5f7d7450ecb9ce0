# syntax=docker/dockerfile:1.7
# Two images from one tree:
#   docker build --target operator -t mentor-operator .   # Python slim: the Kopf operator only
#   docker build --target trainer  -t mentor-trainer  .   # PyTorch CUDA runtime: mentor_trainer
# Base images are pinned to exact tags; pin digests in your registry mirror for full repeatability.

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm
ARG TORCH_IMAGE=pytorch/pytorch:2.9.1-cuda12.8-cudnn9-runtime

# ---------------------------------------------------------------- build the wheel once
FROM ${PYTHON_IMAGE} AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ operator/
COPY trainer/ trainer/
RUN pip wheel --no-deps --wheel-dir /wheels .

# ---------------------------------------------------------------- the operator
FROM ${PYTHON_IMAGE} AS operator
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
COPY --from=wheel /wheels /wheels
RUN pip install /wheels/mentor-*.whl && rm -rf /wheels \
 && useradd --uid 65532 --create-home --shell /usr/sbin/nologin mentor
USER 65532:65532
EXPOSE 8080 8081
ENTRYPOINT ["mentor"]
CMD ["operator", "--standalone"]

# ---------------------------------------------------------------- the trainer
FROM ${TORCH_IMAGE} AS trainer
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 HF_HOME=/tmp/hf
COPY --from=wheel /wheels /wheels
# A C compiler: torch.compile's Triton and Inductor build kernels at run time (the runtime base
# image has none, so `compile: true` would fail).
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
# torch comes with the base image; the rest of the trainer extra is installed beside it.
RUN pip install "/wheels/$(ls /wheels)[trainer]" && rm -rf /wheels \
 && useradd --uid 1000 --create-home --shell /usr/sbin/nologin trainer
USER 1000:1000
WORKDIR /home/trainer
EXPOSE 29500 9090
# torchrun, keeping the workers' exit codes; PET_* variables configure it (see the README).
ENTRYPOINT ["mentor-torchrun"]
CMD ["-m", "mentor_trainer"]
