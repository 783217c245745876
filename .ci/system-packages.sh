#!/usr/bin/env bash
# Install the Debian packages Chorus needs (TTS engines, voices, sox, text sources).
# Idempotent: exits fast when everything is present. Needs root (or sudo).
set -euo pipefail

PACKAGES=(
  # synthesis engines and voices (see shared VOICES.md / docs/corpus.md)
  espeak-ng flite festival
  festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts
  festvox-rablpc16k festvox-don
  mbrola mbrola-us1 mbrola-us2 mbrola-us3 mbrola-en1
  rhvoice rhvoice-english
  libttspico-utils libttspico-data
  # audio tools
  sox libsndfile1 libportaudio2
  # offline text sources
  fortune-mod fortunes fortunes-min wamerican wordnet-base
  # the browser page test (headless Chromium + WebDriver) and TLS test certificates
  chromium chromium-driver openssl
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    SUDO="sudo"
  else
    echo "Missing Debian packages: ${missing[*]}" >&2
    echo "Run as root: sudo $0   (it enables 'contrib non-free' and installs them)" >&2
    exit 1
  fi
fi

# contrib + non-free carry mbrola voices, festvox-don/rabl, rhvoice and pico.
LIST=/etc/apt/sources.list.d/chorus-contrib-nonfree.sources
if [ ! -f "$LIST" ]; then
  codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
  $SUDO tee "$LIST" >/dev/null <<SRC
Types: deb
URIs: http://deb.debian.org/debian
Suites: ${codename} ${codename}-updates
Components: contrib non-free
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
fi
echo "Installing Debian packages: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
