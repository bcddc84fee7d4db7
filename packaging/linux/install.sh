#!/bin/sh
# Add NeuroShard to this user's application menu (no root needed). Run it from the unpacked
# NeuroShard folder; run it again after moving the folder. App data (wallet, ledger,
# checkpoints) lives in ~/.local/share/neuroshard, never here, so replacing this folder with a
# newer release keeps it.
set -eu
here="$(cd "$(dirname "$0")" && pwd)"
apps="${XDG_DATA_HOME:-$HOME/.local/share}/applications"
icons="${XDG_DATA_HOME:-$HOME/.local/share}/icons/hicolor/512x512/apps"
mkdir -p "$apps" "$icons"
cp "$here/neuroshard.png" "$icons/neuroshard.png"
# Desktop Entry spec: quote the path so spaces and most specials survive; escape what quoting keeps.
exec_path=$(printf '%s' "$here/neuroshard" | sed -e 's/[\\"`$]/\\\\&/g' -e 's/%/%%/g')
{ grep -v '^Exec=' "$here/neuroshard.desktop"; printf 'Exec="%s"\n' "$exec_path"; } > "$apps/neuroshard.desktop"
chmod 0644 "$apps/neuroshard.desktop"
command -v update-desktop-database >/dev/null 2>&1 && update-desktop-database "$apps" || true
echo "NeuroShard added to the application menu ($apps/neuroshard.desktop)"
