#!/usr/bin/env bash
# Vendor KaTeX into docs/assets/katex/ from the npm registry, so that the site
# renders math without any CDN. Usage: scripts/vendor-katex.sh [version]
# Only the woff2 fonts are kept (every browser that runs the site reads woff2);
# the stylesheet is rewritten to reference only those.
set -euo pipefail
version="${1:-0.19.1}"
root="$(cd "$(dirname "$0")/.." && pwd)"
target="$root/docs/assets/katex"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "katex@$version" >/dev/null && tar xzf katex-*.tgz)
rm -rf "$target"
mkdir -p "$target/fonts" "$target/contrib"
cp "$work/package/dist/katex.min.js" "$target/"
cp "$work/package/dist/contrib/auto-render.min.js" "$target/contrib/"
cp "$work/package/dist/fonts/"*.woff2 "$target/fonts/"
cp "$work/package/LICENSE" "$target/LICENSE.txt"
# url(fonts/X.woff2) format("woff2"),url(fonts/X.woff) format("woff"),url(fonts/X.ttf) format("truetype")
# -> url(fonts/X.woff2) format("woff2")
sed -E 's/(format\("woff2"\)),url\([^)]*\.woff\) format\("woff"\),url\([^)]*\.ttf\) format\("truetype"\)/\1/g' \
    "$work/package/dist/katex.min.css" > "$target/katex.min.css"
if grep -q '\.ttf\|\.woff)' "$target/katex.min.css"; then
    echo "vendor-katex: could not rewrite the font list of katex.min.css" >&2
    exit 1
fi
echo "KaTeX $version from the npm registry (scripts/vendor-katex.sh); MIT licence, see LICENSE.txt." > "$target/VERSION.txt"
echo "vendored KaTeX $version into $target"
