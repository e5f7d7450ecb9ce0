#!/usr/bin/env bash
# Builds both images with buildah and smoke-tests them, on a machine with no image registry:
# the base image is made locally (debootstrap of Debian bookworm with Python 3.11, pip trusting
# the host's CA bundle), then passed to the Dockerfile as PYTHON_IMAGE and TORCH_IMAGE.
#   sudo tests/images/smoke.sh          (needs root, buildah and debootstrap from Debian)
# Not part of `make test`: the trainer image alone downloads ~3 GB of torch and CUDA wheels.
set -euo pipefail
cd "$(dirname "$0")/../.."
export STORAGE_DRIVER=${STORAGE_DRIVER:-vfs}
base=localhost/mentor-base:bookworm-py311
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if ! buildah inspect "$base" >/dev/null 2>&1; then
  debootstrap --variant=minbase --include=python3,python3-pip,python3-venv,ca-certificates,passwd \
    bookworm "$work/rootfs" http://deb.debian.org/debian
  rm -f "$work"/rootfs/usr/lib/python3.*/EXTERNALLY-MANAGED
  ln -sf /usr/bin/python3 "$work/rootfs/usr/local/bin/python"
  ln -sf /usr/bin/pip3 "$work/rootfs/usr/local/bin/pip"
  cp /etc/ssl/certs/ca-certificates.crt "$work/rootfs/etc/ssl/certs/ca-certificates.crt"
  printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' > "$work/rootfs/etc/pip.conf"
  c=$(buildah from scratch)
  cp -a "$work/rootfs/." "$(buildah mount "$c")/"
  buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$c"
  buildah commit -q "$c" "$base"
  buildah rm "$c"
fi

for target in operator trainer; do
  buildah bud --isolation chroot --network host --build-arg PYTHON_IMAGE=$base \
    --build-arg TORCH_IMAGE=$base --target $target -t localhost/mentor-$target:dev .
done

echo "== operator image: --help, non-root, no torch"
c=$(buildah from localhost/mentor-operator:dev)
buildah run --isolation chroot "$c" -- mentor --help | head -3
test "$(buildah run --isolation chroot "$c" -- id -u)" != 0
buildah run --isolation chroot "$c" -- python -c \
  "import importlib.util as u, mentor.controller.main; assert u.find_spec('torch') is None"
buildah rm "$c" >/dev/null

echo "== trainer image: one CPU training step through mentor-torchrun, as its non-root user"
c=$(buildah from localhost/mentor-trainer:dev)
head -c 200000 "${SHAKESPEARE:-tests/data/tinyshakespeare.txt}" > "$work/input.txt"
cat > "$work/config.json" <<'JSON'
{"model": {"size": "tiny", "tokenizer": "char"},
 "data": {"source": "/tmp/job/input.txt", "sequenceLength": 32},
 "optimization": {"steps": 1, "globalBatchSize": 4, "microBatchSize": 4, "precision": "fp32"},
 "output": {"uri": "/tmp/job/out"}}
JSON
buildah copy --chown 1000:1000 "$c" "$work/input.txt" "$work/config.json" /tmp/job/
# The static rendezvous of the pods (PET_* variables), on loopback: --standalone would look up
# the build container's hostname, which nothing resolves.
buildah run --isolation chroot "$c" -- env PET_NNODES=1 PET_NPROC_PER_NODE=1 PET_NODE_RANK=0 \
  PET_MASTER_ADDR=127.0.0.1 PET_MASTER_PORT=29517 \
  mentor-torchrun -m mentor_trainer --config /tmp/job/config.json
test "$(buildah run --isolation chroot "$c" -- id -u)" = 1000
buildah run --isolation chroot "$c" -- ls /tmp/job/out/model.safetensors
buildah rm "$c" >/dev/null
echo "== both images built and smoke-tested"
