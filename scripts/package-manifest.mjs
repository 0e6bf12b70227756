#!/usr/bin/env node
// Writes the package.json of the published main package from the repository's: the same fields minus what only a
// clone needs (scripts, devDependencies, test runner settings), plus optionalDependencies on the platform package of
// every `napi.targets` entry at exactly this version: what `napi pre-publish` adds in a release. The version lives
// in the repository's package.json alone.
//
//     node scripts/package-manifest.mjs <output package.json>
//
// SPDX-License-Identifier: AGPL-3.0-only
import { parseTriple } from '@napi-rs/cli';
import { readFileSync, writeFileSync } from 'node:fs';

const [dest] = process.argv.slice(2);
if (!dest) {
  console.error('usage: node scripts/package-manifest.mjs <output package.json>');
  process.exit(2);
}
const manifest = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));
for (const key of ['scripts', 'devDependencies', 'ava']) delete manifest[key];
manifest.optionalDependencies = Object.fromEntries(
  manifest.napi.targets.map((t) => [`${manifest.name}-${parseTriple(t).platformArchABI}`, manifest.version]),
);
writeFileSync(dest, JSON.stringify(manifest, null, 2) + '\n');
