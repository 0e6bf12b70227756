/**
 * The native loader's search order and its error, on simulated machines and installs (src/loader.ts): an explicit
 * path wins and never falls back, a local build beats the platform package, the platform package is found by the
 * napi-rs platform name, and a failure names the platform, the package and the fix.
 */
import test from 'ava';

import { locateBinding, platformName, type LoaderEnv, type Machine } from '../src/loader.js';

const linuxGnu: Machine = { platform: 'linux', arch: 'x64', glibc: true };

/** An install with the given files and packages; `require` returns a tag naming what was loaded. */
function env(over: Partial<LoaderEnv> & { files?: string[]; packages?: Record<string, string | Error> }): LoaderEnv {
  const files = new Set(over.files ?? []);
  const packages = over.packages ?? {};
  return {
    machine: over.machine ?? linuxGnu,
    root: '/pkg',
    explicitPath: over.explicitPath,
    exists: (f) => files.has(f),
    require: (id) => {
      const hit = packages[id] ?? (files.has(id) ? `file:${id}` : undefined);
      if (hit instanceof Error) throw hit;
      if (hit === undefined) throw Object.assign(new Error(`Cannot find module '${id}'`), { code: 'MODULE_NOT_FOUND' });
      return hit;
    },
  };
}

test('platform names follow napi-rs', (t) => {
  t.is(platformName(linuxGnu), 'linux-x64-gnu');
  t.is(platformName({ platform: 'linux', arch: 'arm64', glibc: false }), 'linux-arm64-musl');
  t.is(platformName({ platform: 'darwin', arch: 'arm64', glibc: false }), 'darwin-arm64');
  t.is(platformName({ platform: 'win32', arch: 'x64', glibc: false }), 'win32-x64-msvc');
});

test('a local build is taken before the platform package', (t) => {
  const got = locateBinding(env({ files: ['/pkg/native/yolo-loss.node'], packages: { 'yolo-loss-linux-x64-gnu': 'pkg' } }));
  t.deepEqual(got, { binding: 'file:/pkg/native/yolo-loss.node', source: '/pkg/native/yolo-loss.node' });
});

test('without a local build the platform package of the machine is loaded', (t) => {
  const got = locateBinding(env({ packages: { 'yolo-loss-linux-x64-gnu': 'pkg', 'yolo-loss-darwin-arm64': 'other' } }));
  t.deepEqual(got, { binding: 'pkg', source: 'yolo-loss-linux-x64-gnu' });
  const mac = locateBinding(env({ machine: { platform: 'darwin', arch: 'arm64', glibc: false }, packages: { 'yolo-loss-darwin-arm64': 'mac' } }));
  t.is(mac.binding, 'mac');
});

test('a local build that fails to load falls through to the package, and both reasons are kept', (t) => {
  const broken = env({ files: ['/pkg/native/yolo-loss.node'], packages: { '/pkg/native/yolo-loss.node': new Error('invalid ELF header') } });
  const err = t.throws(() => locateBinding(broken)) as Error & { code: string };
  t.is(err.code, 'ERR_NATIVE_BINDING');
  t.regex(err.message, /local build \/pkg\/native\/yolo-loss\.node: invalid ELF header/);
  t.regex(err.message, /the package yolo-loss-linux-x64-gnu: not installed/);
});

test('a missing optional package names the platform, the package and the fix', (t) => {
  const err = t.throws(() => locateBinding(env({}))) as Error & { code: string };
  t.is(err.code, 'ERR_NATIVE_BINDING');
  t.regex(err.message, /for this platform, linux-x64-gnu/);
  t.regex(err.message, /yolo-loss-linux-x64-gnu: not installed/);
  t.regex(err.message, /--omit=optional/);
});

test('a package that is there but does not load reports its own error (e.g. a too old glibc)', (t) => {
  const old = new Error("/lib64/libc.so.6: version `GLIBC_2.18' not found");
  const err = t.throws(() => locateBinding(env({ packages: { 'yolo-loss-linux-x64-gnu': old } }))) as Error;
  t.regex(err.message, /yolo-loss-linux-x64-gnu: .*GLIBC_2\.18' not found/);
});

test('an unpublished platform is told to build from source', (t) => {
  const musl = env({ machine: { platform: 'linux', arch: 'x64', glibc: false } });
  const err = t.throws(() => locateBinding(musl)) as Error;
  t.regex(err.message, /linux-x64-musl/);
  t.regex(err.message, /publishes binaries for linux-x64-gnu, .*build it from source/);
});

test('YOLO_LOSS_NATIVE_PATH is used alone: a wrong path is an error, not a fallback', (t) => {
  const files = ['/pkg/native/yolo-loss.node', '/opt/custom.node'];
  t.is(locateBinding(env({ files, explicitPath: '/opt/custom.node' })).binding, 'file:/opt/custom.node');
  const err = t.throws(() => locateBinding(env({ files, explicitPath: '/opt/missing.node' }))) as Error & { code: string };
  t.is(err.code, 'ERR_NATIVE_BINDING');
  t.regex(err.message, /YOLO_LOSS_NATIVE_PATH=\/opt\/missing\.node: Cannot find module/);
  t.regex(err.message, /unset it/);
});
