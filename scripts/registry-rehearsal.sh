#!/usr/bin/env bash
# A release rehearsal against a real npm registry on this machine: publishes prebuilt/*.tgz (npm run pack:prebuilt)
# to a verdaccio 6.8.0 on 127.0.0.1 with its own temporary storage, then installs `yolo-loss` from it into an empty
# project without a Rust or CUDA toolchain and runs the package checks there (scripts/test-package.sh
# --install-from-registry), with an empty npm cache, as a user's first install. Verdaccio is stopped at the end.
#
#     npm run pack:prebuilt && bash scripts/registry-rehearsal.sh
#
# Packages other than yolo-loss* (tfjs for the adapter check) are proxied from the npm registry this machine's npm is
# configured with. The platform packages of a release that were not built here (darwin, win32, linux-arm64) are
# absent from the local registry, as on a machine whose platform package failed to publish: npm must skip them.
# verdaccio itself is installed once into ${XDG_CACHE_HOME:-$HOME/.cache}/yolo-loss/verdaccio-6.8.0 (6.8.0: the
# newest release that runs on Node 20).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd)
version=$(node -p "require('./package.json').version")
verdaccio_version=6.8.0
verdaccio_dir=${XDG_CACHE_HOME:-$HOME/.cache}/yolo-loss/verdaccio-$verdaccio_version
upstream=$(npm config get registry)
port=${YOLO_LOSS_REHEARSAL_PORT:-4873}
url=http://127.0.0.1:$port/

for f in "prebuilt/yolo-loss-$version.tgz" "prebuilt/yolo-loss-linux-x64-gnu-$version.tgz"; do
  [ -f "$f" ] || { echo "registry-rehearsal.sh: $f is missing: run npm run pack:prebuilt first" >&2; exit 1; }
done

if [ ! -x "$verdaccio_dir/node_modules/.bin/verdaccio" ]; then
  echo "=== installing verdaccio $verdaccio_version into $verdaccio_dir"
  mkdir -p "$verdaccio_dir"
  npm install --prefix "$verdaccio_dir" --no-audit --no-fund --silent "verdaccio@$verdaccio_version"
fi

work=$(mktemp -d)
pid=
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

cat >"$work/config.yaml" <<YAML
storage: $work/storage
auth:
  htpasswd:
    file: $work/htpasswd
    max_users: 1
uplinks:
  upstream:
    url: $upstream
packages:
  'yolo-loss*':
    access: \$all
    publish: \$authenticated
  '**':
    access: \$all
    proxy: upstream
listen: 127.0.0.1:$port
log: { type: stdout, format: pretty, level: warn }
YAML

echo "=== verdaccio $verdaccio_version on $url (storage $work/storage)"
"$verdaccio_dir/node_modules/.bin/verdaccio" --config "$work/config.yaml" >"$work/verdaccio.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
  curl -fsS "${url}-/ping" >/dev/null 2>&1 && break
  kill -0 "$pid" 2>/dev/null || { cat "$work/verdaccio.log" >&2; echo "verdaccio did not start" >&2; exit 1; }
  sleep 0.2
done

# A publisher account of this registry only; its token goes into a throw-away npmrc.
token=$(curl -fsS -X PUT "${url}-/user/org.couchdb.user:rehearsal" -H 'content-type: application/json' \
  -d '{"name":"rehearsal","password":"rehearsal-only"}' | node -e 'process.stdout.write(JSON.parse(require("fs").readFileSync(0)).token)')
printf '//127.0.0.1:%s/:_authToken=%s\n' "$port" "$token" >"$work/npmrc"

echo "=== publish"
for f in "$root/prebuilt/yolo-loss-linux-x64-gnu-$version.tgz" "$root/prebuilt/yolo-loss-$version.tgz"; do
  npm publish "$f" --registry "$url" --userconfig "$work/npmrc" --access public --loglevel warn
done
npm view yolo-loss --registry "$url" --userconfig "$work/npmrc" name version optionalDependencies

echo "=== install from the registry and check"
npm_config_cache="$work/npm-cache" bash scripts/test-package.sh --install-from-registry "$url"
