#!/usr/bin/env bash
# Installs every Debian package skinlesion needs to build, test and run.
# Idempotent: packages already present are left alone. Run as root (or with sudo).
set -euo pipefail

PACKAGES=(
  # toolchain
  build-essential cmake ninja-build ccache pkg-config git clang libclang-rt-14-dev
  # LibTorch (CPU) and a fast BLAS for it; Gloo for c10d on CPU
  libtorch-dev libopenblas0-openmp libgloo-dev
  # RPC
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc
  # images, plots, JSON, storage, metrics
  libopencv-dev libcairo2-dev fonts-dejavu-core nlohmann-json3-dev libsqlite3-dev prometheus-cpp-dev
  libabsl-dev
  # tests
  libgtest-dev libgmock-dev
  # reference models for the conformance tests (system interpreter)
  python3 python3-torch python3-torchvision python3-numpy python3-pil
  # Python gRPC clients in the service tests (stubs generated from our protos)
  python3-grpcio python3-protobuf
  # gateway HTTP server; browser, load generator and Prometheus for the cluster tests
  libcpp-httplib-dev chromium wrk prometheus curl
)
# Node.js/npm (website tests: playwright-core) and kubectl (manifest rendering) come
# from Debian unless the machine already has them from another source.
command -v npm >/dev/null 2>&1 || PACKAGES+=(nodejs npm)
command -v kubectl >/dev/null 2>&1 || PACKAGES+=(kubernetes-client)

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -eq 0 ]; then
  echo "setup: all ${#PACKAGES[@]} packages present"
  exit 0
fi

echo "setup: installing ${#missing[@]} packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "setup: done"
