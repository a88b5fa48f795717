#!/usr/bin/env bash
# Installs every Debian package cmrsearch needs (fast when all are present), then builds.
#   scripts/setup.sh              normal build in build/
#   scripts/setup.sh --sanitize   AddressSanitizer + UBSan build in build-asan/
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  build-essential cmake pkg-config clang
  libfaiss-dev liblmdb-dev lmdb-utils libopenblas-dev libcmocka-dev libjansson-dev
  libdcmtk-dev dcmtk libxml2-dev libxml2-utils dicom3tools
  python3 python3-numpy python3-pydicom
  libmicrohttpd-dev zlib1g-dev libarchive-dev wrk chromium python3-websocket
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  sudo_cmd=(); [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

build_dir=build
cmake_args=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMR_WERROR=ON)
if [ "${1:-}" = "--sanitize" ]; then
  build_dir=build-asan
  cmake_args=(-DCMAKE_BUILD_TYPE=Debug -DCMR_WERROR=ON -DCMR_SANITIZE=ON
              "-DCMR_PHANTOM_EXE=${CMR_PHANTOM_EXE:-}")
fi
# A compiler change (CC=clang) needs a fresh cache.
if [ -f "$build_dir/CMakeCache.txt" ] && [ -n "${CC:-}" ] &&
   ! grep -q "CMAKE_C_COMPILER:.*$(command -v "$CC")" "$build_dir/CMakeCache.txt"; then
  rm -rf "$build_dir"
fi
cmake -S . -B "$build_dir" "${cmake_args[@]}" >/dev/null
cmake --build "$build_dir" -j "$(nproc)" >&2
