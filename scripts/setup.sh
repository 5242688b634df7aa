#!/usr/bin/env bash
# Set up napari-histovol in ./.venv (Python >= 3.10, Debian/Ubuntu or any Linux with pip).
#
#   bash scripts/setup.sh                  # the package, napari with PyQt6, CPU torch, tensorflow-cpu
#   bash scripts/setup.sh --with-display   # also the apt packages for a virtual X display (tests, CI)
#
# torch is installed first and pinned to the CPU build 2.13.0: a looser requirement lets pip
# pull several GB of CUDA wheels. The script is idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

WITH_DISPLAY=0
for arg in "$@"; do
  case "$arg" in
    --with-display) WITH_DISPLAY=1 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done

PY=${PYTHON:-python3}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
DISPLAY_PKGS="xvfb libxcb-icccm4 libxcb-keysyms1 libxcb-cursor0 libxkbcommon-x11-0 libgl1-mesa-dri libegl1 \
libxcb-image0 libxcb-render-util0 libxcb-shape0 libxcb-xinerama0 libdbus-1-3 libfontconfig1"

if [ "$WITH_DISPLAY" = 1 ]; then
  missing=""
  for p in $DISPLAY_PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
  done
  if [ -n "$missing" ]; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    echo "setup.sh: installing display packages:$missing"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
  fi
fi

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
PIP=".venv/bin/python -m pip"
$PIP install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
# CPU torch first (see the note above), then the project with every extra.
$PIP install -q "torch==${TORCH_VERSION}" 2>&1 | grep -v "^WARNING: Location" || true
$PIP install -q -e ".[all]" 2>&1 | grep -v "^WARNING: Location" || true
# nnInteractive, the optional pretrained segmentation backend (`histovol segment --model`; its
# tests use a tiny model made on the spot, no weights are downloaded). Its network library asks
# for timm, which pulls a torchvision that does not load with CPU torch; the point-prompt UNets
# do not use timm, so these three come without their declared dependencies and the rest of what
# they import is listed here.
$PIP install -q --no-deps nninteractive==2.6.0 nnunetv2==2.8.1 dynamic_network_architectures==0.4.4 \
  2>&1 | grep -v "^WARNING: Location" || true
$PIP install -q "torch==${TORCH_VERSION}" nninteractive-client==2.6.0 "acvl_utils>=0.2.6,<0.3" \
  batchgenerators batchgeneratorsv2 blosc2 einops SimpleITK nibabel yacs graphviz seaborn pandas \
  fastapi "uvicorn[standard]" huggingface_hub 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import napari_histovol, torch; print('setup.sh: napari-histovol', napari_histovol.__version__, '| torch', torch.__version__)"
