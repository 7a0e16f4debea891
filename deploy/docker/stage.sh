#!/usr/bin/env bash
# Lays out what each runtime image gets, from a build directory (the Dockerfile's
# build stage runs it; it also works on a host build for a look at the result):
#   deploy/docker/stage.sh BUILD_DIR OUT_DIR [LIBTORCH_DIR]
# OUT_DIR/<service>/            files copied into the image root (/opt/skinlesion/...)
# OUT_DIR/<service>.packages    the Debian runtime packages it needs (runtime-packages.sh)
# LIBTORCH_DIR: a LibTorch unpacked outside Debian's packages (the CUDA variant); its
# lib/ is copied into the images that link it, at the same path (the binaries' RPATH).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
[ $# -ge 2 ] || { sed -n '2,9s/^# \{0,1\}//p' "$0" >&2; exit 2; }
build=$1
out=$2
libtorch=${3:-}
skip=()
[ -n "$libtorch" ] && skip=(--skip "$libtorch")

stage() {  # stage SERVICE BINARY... (the first is the entry point)
  local service=$1
  shift
  local root="$out/$service"
  mkdir -p "$root/opt/skinlesion/bin"
  install -m 0755 -s "$@" "$root/opt/skinlesion/bin/"
  "$here/runtime-packages.sh" "${skip[@]}" "$@" >"$out/$service.packages"
  if [ -n "$libtorch" ] && ldd "$@" | grep -q "$libtorch/lib"; then
    mkdir -p "$root$libtorch"
    cp -a "$libtorch/lib" "$root$libtorch/"
  elif grep -q '^libtorch' "$out/$service.packages"; then
    # Debian's LibTorch: OpenBLAS (OpenMP) instead of the reference BLAS that apt
    # would otherwise pick for libblas.so.3.
    echo libopenblas0-openmp >>"$out/$service.packages"
  fi
}

rm -rf "$out"
mkdir -p "$out"
stage inference "$build/services/inference/skinlesion-inference"
stage trainer "$build/services/trainer/skinlesion-trainer" "$build/tools/skinlesion"
stage registry "$build/services/registry/skinlesion-registry"
stage gateway "$build/services/gateway/skinlesion-gateway"
# The bundled model: the trainer seeds an empty registry with it (its init
# container); inference can serve it alone (--model_dir).
for service in inference trainer registry; do
  mkdir -p "$out/$service/opt/skinlesion/models"
  cp -a "$repo/models/bundled" "$out/$service/opt/skinlesion/models/"
done
# The trainer's jobs draw plots (Cairo) with this font.
echo fonts-dejavu-core >>"$out/trainer.packages"
mkdir -p "$out/gateway/opt/skinlesion"
cp -a "$repo/web" "$out/gateway/opt/skinlesion/web"
for f in "$out"/*.packages; do sort -u -o "$f" "$f"; done
echo "staged: $(cd "$out" && ls -d */ | tr -d / | tr '\n' ' ')"
