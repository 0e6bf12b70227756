/**
 * Finds and loads the native addon. Users get it from npm as a platform package (`yolo-loss-linux-x64-gnu`, …),
 * an optionalDependency of `yolo-loss` that npm installs only on the matching os/cpu/libc; developers get it from
 * `npm run build` in a clone (`native/yolo-loss.node`). The order, first found wins:
 *
 *   1. `YOLO_LOSS_NATIVE_PATH`, when set: that file and nothing else (for a custom build; a wrong path is an error,
 *      never a silent fallback to another binary);
 *   2. the local build `native/yolo-loss.node` beside `dist/`: a clone's own build beats an installed package, so a
 *      developer always runs the code they just compiled;
 *   3. the platform package of this machine.
 *
 * Otherwise the error names the platform, the package it looked for and what to do. Same behaviour as the loader
 * `napi build --platform --js` generates, written out so that it stays readable and testable (see `locateBinding`).
 *
 * SPDX-License-Identifier: AGPL-3.0-only
 */

import * as fs from 'node:fs';
import * as path from 'node:path';

/** The package name every platform package starts with (`yolo-loss-<platform>`). */
export const PACKAGE_NAME = 'yolo-loss';

/** Platforms a release publishes a package for; keep in step with `napi.targets` in package.json. */
export const PUBLISHED_PLATFORMS: readonly string[] = [
  'linux-x64-gnu',
  'linux-arm64-gnu',
  'darwin-arm64',
  'darwin-x64',
  'win32-x64-msvc',
];

/** What the loader needs to know about the machine; `currentMachine()` reads it from `process`. */
export interface Machine {
  platform: string; // process.platform
  arch: string; // process.arch
  /** Linux only: whether the C library is glibc (false: musl). */
  glibc: boolean;
}

export function currentMachine(): Machine {
  return { platform: process.platform, arch: process.arch, glibc: process.platform === 'linux' && hasGlibc() };
}

function hasGlibc(): boolean {
  // Node's diagnostic report names the glibc it runs on; musl builds of Node have no such field.
  const header = (process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined)?.header;
  return typeof header?.glibcVersionRuntime === 'string';
}

/** napi-rs's platform name: `linux-x64-gnu`, `darwin-arm64`, `win32-x64-msvc`, … */
export function platformName(m: Machine): string {
  if (m.platform === 'linux') return `linux-${m.arch}-${m.glibc ? 'gnu' : 'musl'}`;
  if (m.platform === 'win32') return `win32-${m.arch}-msvc`;
  return `${m.platform}-${m.arch}`;
}

/** One place the loader looked, and why it did not take it (`undefined` reason: it was taken). */
export interface Attempt {
  what: string;
  reason?: string;
}

export interface Located {
  /** The module `require` loaded. */
  binding: unknown;
  /** Where it came from: a file path, or a package name. */
  source: string;
}

/** Dependencies of the search, injectable so that tests can play any machine and any install. */
export interface LoaderEnv {
  machine: Machine;
  /** The package's root folder (holds `native/` in a clone). */
  root: string;
  /** `process.env.YOLO_LOSS_NATIVE_PATH`. */
  explicitPath: string | undefined;
  exists(file: string): boolean;
  require(id: string): unknown;
}

/** Walks the order above; returns the binding or throws the loader's error (code `ERR_NATIVE_BINDING`). */
export function locateBinding(env: LoaderEnv): Located {
  const platform = platformName(env.machine);
  const pkg = `${PACKAGE_NAME}-${platform}`;
  const attempts: Attempt[] = [];

  if (env.explicitPath !== undefined && env.explicitPath !== '') {
    const file = path.resolve(env.explicitPath);
    try {
      return { binding: env.require(file), source: file };
    } catch (e) {
      throw loaderError(platform, pkg, [{ what: `YOLO_LOSS_NATIVE_PATH=${file}`, reason: firstLine(e) }], false);
    }
  }

  const local = path.join(env.root, 'native', `${PACKAGE_NAME}.node`);
  if (env.exists(local)) {
    try {
      return { binding: env.require(local), source: local };
    } catch (e) {
      attempts.push({ what: `the local build ${local}`, reason: firstLine(e) });
    }
  } else {
    attempts.push({ what: `a local build at ${local}`, reason: 'not there' });
  }

  try {
    return { binding: env.require(pkg), source: pkg };
  } catch (e) {
    const missing = (e as { code?: string }).code === 'MODULE_NOT_FOUND' && firstLine(e).includes(`'${pkg}'`);
    attempts.push({ what: `the package ${pkg}`, reason: missing ? 'not installed' : firstLine(e) });
  }
  throw loaderError(platform, pkg, attempts, true);
}

function loaderError(platform: string, pkg: string, attempts: Attempt[], searched: boolean): Error {
  const published = PUBLISHED_PLATFORMS.includes(platform);
  const lines = [
    `yolo-loss: no native binding could be loaded for this platform, ${platform}.`,
    ...attempts.map((a) => `  - ${a.what}: ${a.reason ?? 'loaded'}`),
  ];
  if (!searched) {
    lines.push('Fix: point YOLO_LOSS_NATIVE_PATH at a yolo-loss .node file built for this platform, or unset it.');
  } else if (published) {
    lines.push(
      `Fix: install the optional dependency ${pkg}: reinstall without --omit=optional / --no-optional ` +
        '(`npm install yolo-loss`); if the lockfile was made on another platform, npm may have left it out: remove ' +
        'node_modules and package-lock.json and run `npm install` again. Or build from source (README, "Build from source").',
    );
  } else {
    lines.push(
      `Fix: yolo-loss publishes binaries for ${PUBLISHED_PLATFORMS.join(', ')}, not for ${platform}; build it from ` +
        'source (README, "Build from source") and set YOLO_LOSS_NATIVE_PATH, or run on one of those platforms.',
    );
  }
  const err = new Error(lines.join('\n')) as Error & { code: string };
  err.code = 'ERR_NATIVE_BINDING';
  return err;
}

function firstLine(e: unknown): string {
  const text = e instanceof Error ? e.message : String(e);
  return text.split('\n', 1)[0] ?? text;
}

/** The real machine, the real file system and Node's `require`. */
export function loadBinding(root: string): Located {
  return locateBinding({
    machine: currentMachine(),
    root,
    explicitPath: process.env.YOLO_LOSS_NATIVE_PATH,
    exists: (file) => fs.existsSync(file),
    require: (id) => require(id) as unknown,
  });
}
