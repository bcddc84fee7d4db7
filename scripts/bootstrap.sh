#!/usr/bin/env bash
# Creates .venv in the repo root and installs everything the node needs (idempotent, quick when
# nothing changed). Usage: scripts/bootstrap.sh [run|test|packaging]
# NEUROSHARD_TORCH=cuda installs the default (CUDA) torch build instead of the pinned CPU one.
set -euo pipefail
cd "$(dirname "$0")/.."
profile="${1:-run}"
TORCH_SPEC="torch==2.13.0"
[ "${NEUROSHARD_TORCH:-cpu}" = "cuda" ] && TORCH_SPEC="torch"

qt_libs="libgl1 libegl1 libxkbcommon0 libfontconfig1 libglib2.0-0 libdbus-1-3"
# A real window (not only offscreen) also needs Qt's xcb plugin libraries (PLATFORM.md); without
# them Qt aborts at start naming only libxcb-cursor0. The run profile is what a volunteer uses.
xcb_libs="libxcb-cursor0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-render0 libxcb-render-util0
  libxcb-shape0 libxcb-util1 libxcb-xkb1 libxkbcommon-x11-0"
[ "$profile" = "run" ] && qt_libs="$qt_libs $xcb_libs"
if command -v dpkg >/dev/null 2>&1; then
  missing=""
  for lib in $qt_libs; do dpkg -s "$lib" >/dev/null 2>&1 || missing="$missing $lib"; done
  if [ -n "$missing" ]; then
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
      echo "bootstrap: installing Qt system libraries:$missing" >&2
      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing) >&2
    else
      echo "bootstrap: the app's window needs these system libraries; install them with:" >&2
      echo "  sudo apt-get install -y$missing" >&2
    fi
  fi
fi

# The test profile also wants an X server for the real X11 idle / full-screen tests; best effort:
# without it those tests skip, nothing else depends on it.
if [ "$profile" != "run" ] && ! command -v Xvfb >/dev/null 2>&1 && [ "$(id -u)" = "0" ] \
   && command -v apt-get >/dev/null 2>&1; then
  echo "bootstrap: installing xvfb for the X11 tests" >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq xvfb) >&2 \
    || echo "bootstrap: could not install xvfb; the X11 tests will skip" >&2
fi

# The NAT namespace tests and benchmarks/nat.py build routers in network namespaces: they need
# `ip` (iproute2) and `iptables` (MASQUERADE). Best effort, root only: without them they skip.
if [ "$profile" != "run" ] && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  net_missing=""
  command -v ip >/dev/null 2>&1 || net_missing="$net_missing iproute2"
  command -v iptables >/dev/null 2>&1 || net_missing="$net_missing iptables"
  if [ -n "$net_missing" ]; then
    echo "bootstrap: installing$net_missing for the NAT namespace tests" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $net_missing) >&2 \
      || echo "bootstrap: could not install$net_missing; the NAT namespace tests will skip" >&2
  fi
fi

python_bin="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$python_bin" -m venv .venv
py=.venv/bin/python

extras=""
case "$profile" in
  run) extras="" ;;
  test) extras="[dev]" ;;
  packaging) extras="[dev,packaging]" ;;
  *) echo "bootstrap: unknown profile '$profile' (run|test|packaging)" >&2; exit 2 ;;
esac

stamp=".venv/.neuroshard-${profile}.stamp"
want="$(cat pyproject.toml scripts/bootstrap.sh | sha256sum | cut -c1-16)-${TORCH_SPEC}"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "bootstrap: installing dependencies into .venv ($profile)" >&2
  "$py" -m pip install -q --disable-pip-version-check "$TORCH_SPEC" >&2
  "$py" -m pip install -q --disable-pip-version-check -e ".${extras}" >&2
  echo "$want" > "$stamp"
fi
# The protobuf/gRPC modules are generated from the one .proto at install time, never hand-edited.
"$py" -m app.node.p2p.build_proto >&2
