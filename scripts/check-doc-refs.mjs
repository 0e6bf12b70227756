#!/usr/bin/env node
// Keeps the repository's references to its own documentation true (`npm run check:docs`).
//
// The code and docs cite docs/spec.md by section ("§9", "§7 step 6", "§18 item 4", "§D2", "project decision 2";
// in ASCII-only strings "docs/spec.md section 11") and link to headings of docs/*.md ("api.md#errors"). This script
// reads every text file git tracks (and untracked files that are not ignored) and fails, listing each offender as
// file:line, when
//   * a file still points at the specification files that used to live outside the repository (SPEC.md, API.md,
//     ../shared);
//   * a cited section of docs/spec.md does not exist, or a cited step/item number is not in that section's list;
//   * a link to spec.md#anchor or api.md#anchor, or a markdown file's link to its own #anchor, names a heading that
//     does not exist.
// Binary files (a NUL byte) are skipped. Exit status 0 when everything resolves, 1 otherwise.

import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const self = path.relative(root, fileURLToPath(import.meta.url));
const SPEC = 'docs/spec.md';

/** Tracked files plus untracked ones git does not ignore, so a new file is checked before its first commit. */
function repositoryFiles() {
  const out = execFileSync('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard'], { cwd: root, encoding: 'utf8' });
  return [...new Set(out.split('\0').filter((f) => f !== ''))];
}

function readText(file) {
  let buf;
  try {
    buf = readFileSync(path.join(root, file));
  } catch {
    return undefined; // listed by git but deleted in the work tree
  }
  return buf.subarray(0, 8192).includes(0) ? undefined : buf.toString('utf8');
}

/** GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens. */
function slug(heading) {
  return heading
    .trim()
    .toLowerCase()
    .replace(/[^\p{L}\p{N}\s_-]/gu, '')
    .replace(/\s/g, '-');
}

/** Headings of a markdown file: their anchors, and for numbered ones ("## 9. …", "### 6.2 …", "### D2. …") the
 * numbers of the list items in their body (steps, items). */
function parseDoc(text) {
  const anchors = new Set();
  const sections = new Map();
  let current;
  let fenced = false;
  for (const line of text.split('\n')) {
    if (/^\s*```/.test(line)) fenced = !fenced;
    if (fenced) continue; // a "# comment" in a code block is no heading
    const h = /^#{1,6}\s+(.*)$/.exec(line);
    if (h) {
      // A repeated heading gets "-1", "-2", … appended, as GitHub does.
      const base = slug(h[1]);
      let anchor = base;
      for (let k = 1; anchors.has(anchor); k++) anchor = `${base}-${k}`;
      anchors.add(anchor);
      const id = /^(D\d+|\d+(?:\.\d+)*)\.?(?:\s|$)/.exec(h[1]);
      current = id ? id[1] : undefined;
      if (current !== undefined) sections.set(current, new Set());
      continue;
    }
    const item = /^\s*(\d+)\.\s/.exec(line);
    if (item && current !== undefined) sections.get(current).add(Number(item[1]));
  }
  return { anchors, sections };
}

const docs = new Map();
function doc(name) {
  if (!docs.has(name)) {
    const text = readText(name);
    docs.set(name, text === undefined ? undefined : parseDoc(text));
  }
  return docs.get(name);
}

const spec = doc(SPEC);
if (spec === undefined) {
  console.error(`check:docs: ${SPEC} is missing`);
  process.exit(1);
}

// What no file may point at any more: the out-of-tree specification and contract.
const DANGLING = [
  [/\bSPEC\b/, 'cites SPEC (use docs/spec.md §n)'],
  [/\bAPI\.md\b/, 'cites API.md (use docs/api.md)'],
  [/\.\.\/shared\b|\/work\/shared\b/, 'points at ../shared (outside the repository)'],
];

// A section reference and what may follow it: "§9", "§7 step 6", "§9 steps 7–10", "§18 items 3 and 4", "§D2";
// "docs/spec.md section 11" (ASCII-only strings); "project decision 2".
const SECTION_REF = /(?:§\s?|docs\/spec\.md section )(D\d+|\d+(?:\.\d+)*)(?:\s+(steps?|items?)\s+(\d+)(?:\s*(?:–|-|and|,|to)\s*(\d+))?)?/g;
const DECISION_REF = /\bproject decisions? (\d+)/gi;
const LINK_REF = /\b((?:docs\/)?(?:spec|api|README)\.md)#([\p{L}\p{N}_-]+)/gu;
const LOCAL_LINK = /\]\(#([^)\s]+)\)/g; // [text](#anchor) inside a markdown file

const problems = [];
let checked = 0;
const files = repositoryFiles().filter((f) => f !== self && !f.startsWith('node_modules/'));
for (const file of files) {
  const text = readText(file);
  if (text === undefined) continue;
  text.split('\n').forEach((line, i) => {
    const where = `${file}:${i + 1}`;
    for (const [re, what] of DANGLING) if (re.test(line)) problems.push(`${where}: ${what}: ${line.trim()}`);
    for (const m of line.matchAll(SECTION_REF)) {
      checked++;
      const [ref, id, kind, first, last] = m;
      const items = spec.sections.get(id);
      if (items === undefined) {
        problems.push(`${where}: "${ref.trim()}": ${SPEC} has no section ${id}`);
        continue;
      }
      for (const n of [first, last].filter((x) => x !== undefined).map(Number)) {
        if (!items.has(n)) problems.push(`${where}: "${ref.trim()}": section ${id} of ${SPEC} has no ${kind.replace(/s$/, '')} ${n}`);
      }
    }
    for (const m of line.matchAll(DECISION_REF)) {
      checked++;
      if (!spec.sections.has(`D${m[1]}`)) problems.push(`${where}: "${m[0]}": ${SPEC} has no decision D${m[1]}`);
    }
    for (const m of line.matchAll(LINK_REF)) {
      // A link is resolved from its own file's folder, or from the root when it is spelled docs/….
      const target = m[1].startsWith('docs/') ? m[1] : path.posix.join(path.posix.dirname(file), m[1]);
      const d = doc(target);
      if (d === undefined) continue; // not one of ours (e.g. another README.md)
      checked++;
      if (!d.anchors.has(m[2])) problems.push(`${where}: "${m[0]}": ${target} has no heading #${m[2]}`);
    }
    if (file.endsWith('.md')) {
      for (const m of line.matchAll(LOCAL_LINK)) {
        checked++;
        if (!doc(file).anchors.has(m[1])) problems.push(`${where}: "${m[0]}": ${file} has no heading #${m[1]}`);
      }
    }
  });
}

if (problems.length > 0) {
  console.error(`check:docs: ${problems.length} dangling documentation reference(s):`);
  for (const p of problems) console.error(`  ${p}`);
  process.exit(1);
}
console.log(`check:docs: ${checked} references in ${files.length} files resolve (${SPEC}: ${spec.sections.size} numbered sections)`);
