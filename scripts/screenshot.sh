#!/usr/bin/env bash
# Render a report in headless Chromium and save a full-page PNG: proves the HTML opens without a
# server and shows its figures.   scripts/screenshot.sh reports/report.html [out.png] [height_px]
# Headless Chromium captures the window only, so the window is as tall as the whole report.
set -euo pipefail
html=$(realpath "$1"); png=${2:-${1%.html}.png}; height=${3:-13000}
browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
[ -n "$browser" ] || { echo "no Chromium found: apt-get install chromium" >&2; exit 2; }
profile=$(mktemp -d)
"$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$profile" --window-size=1100,"$height" --screenshot="$png" "file://$html" 2>/dev/null
rm -rf "$profile"
echo "$png"
