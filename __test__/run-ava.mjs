#!/usr/bin/env node
// Runs the ava suite (`npm run test:js`). Locally: ava's default reporter. Under CI (CI set and not "false"): the
// TAP reporter, followed by one plain closing line "ava: N passed, N failed" (", N skipped" when any), which CI
// reads. The exit status is ava's; a run that executed no test fails.
// SPDX-License-Identifier: AGPL-3.0-only
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

const require = createRequire(import.meta.url);
// ava exports no package.json; its main entry point sits beside the CLI in entrypoints/.
const cli = join(dirname(require.resolve('ava')), 'cli.mjs');
const ci = Boolean(process.env.CI) && process.env.CI !== 'false' && process.env.CI !== '0';
const args = [cli, ...(ci ? ['--tap'] : []), ...process.argv.slice(2)];

const child = spawn(process.execPath, args, { stdio: ci ? ['inherit', 'pipe', 'inherit'] : 'inherit' });
let out = '';
if (ci) {
  child.stdout.on('data', (chunk) => {
    process.stdout.write(chunk);
    out += chunk.toString('utf8');
  });
}
child.on('close', (code, signal) => {
  let status = code ?? (signal ? 1 : 0);
  if (ci) {
    const count = (key) => {
      const m = out.match(new RegExp(`^# ${key} (\\d+)$`, 'm'));
      return m ? Number(m[1]) : 0;
    };
    const pass = count('pass');
    const fail = count('fail');
    const skip = count('skip') + count('todo');
    process.stdout.write(`\nava: ${pass} passed, ${fail} failed${skip > 0 ? `, ${skip} skipped` : ''}\n`);
    if (pass + fail === 0 && status === 0) {
      process.stderr.write('run-ava: no test was executed\n');
      status = 1;
    }
  }
  process.exit(status);
});
