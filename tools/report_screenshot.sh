#!/usr/bin/env bash
# Render a search report in headless Chromium at phone width and save a screenshot to look at:
#   bash tools/report_screenshot.sh [OUT_DIR]     (needs `apt-get install chromium`; writes OUT_DIR/report.html, report.png)
# It runs the demo search with --report, checks the page loads in the browser, and fails when the screenshot is blank.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=${1:-$(mktemp -d)}
mkdir -p "$out"
browser=$(command -v chromium || command -v chromium-browser || true)
[ -n "$browser" ] || { echo "Error: no chromium on PATH (apt-get install chromium)" >&2; exit 1; }
.venv/bin/nasprune search --model nasprune_cli.demo:build --recipe recipes/demo.yaml --flops 50% --quiet \
  --report "$out/report.html" --overwrite >/dev/null
"$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=412,2400 \
  --screenshot="$out/report.png" "file://$(realpath "$out/report.html")" 2>/dev/null
.venv/bin/python - "$out/report.png" <<'PY'
import sys
import numpy as np
from PIL import Image
pixels = np.asarray(Image.open(sys.argv[1]).convert("L"))
drawn = (pixels < 200).mean()  # share of non-white pixels: text, tables and plots
assert drawn > 0.02, f"{sys.argv[1]}: the page rendered blank ({drawn:.1%} drawn)"
print(f"{sys.argv[1]}: {pixels.shape[1]}x{pixels.shape[0]}, {drawn:.1%} of the pixels drawn")
PY
