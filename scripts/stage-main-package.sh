#!/usr/bin/env bash
# Lays out the main npm package `yolo-loss` in DIR, ready for `npm pack` or `npm publish`: the files package.json
# `files` selects from this tree (built JS and types, README, CHANGELOG, LICENSE) and the users' manifest
# (scripts/package-manifest.mjs). Used by scripts/pack-prebuilt.sh and the release workflow. Run `npm run build:ts`
# first.
#
#     bash scripts/stage-main-package.sh DIR
set -euo pipefail

dest=${1:?usage: stage-main-package.sh DIR}
cd "$(dirname "${BASH_SOURCE[0]}")/.."
[ -f dist/index.js ] || { echo "stage-main-package.sh: no dist/index.js: run npm run build:ts first" >&2; exit 1; }
mkdir -p "$dest"
node scripts/package-manifest.mjs "$dest/package.json"
npm pack --dry-run --json 2>/dev/null |
  node -e 'for (const f of JSON.parse(require("fs").readFileSync(0))[0].files) console.log(f.path)' |
  grep -v '^package.json$' |
  while read -r f; do mkdir -p "$dest/$(dirname "$f")" && cp "$f" "$dest/$f"; done
