/**
 * Checks the compiled lib/format.js against a table of examples: by default
 * tests/formatting_examples.json, the table jupyter_taskrun/formatting.py is
 * pinned to (run by tests/test_format_ts.py).
 *
 * Usage: node scripts/check-format.mjs [examples.json]
 * Exit status: 0 all match; 1 a mismatch (one line each); 2 not built.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const compiled = resolve(here, '../lib/format.js');
const tablePath =
  process.argv[2] ?? resolve(here, '../../tests/formatting_examples.json');

if (!existsSync(compiled)) {
  console.error(`${compiled} is missing: run "jlpm build:lib" first`);
  process.exit(2);
}
// the package has no "type": "module"; a data: URL always loads as ES module
const source = readFileSync(compiled, 'utf-8');
const format = await import(
  `data:text/javascript;base64,${Buffer.from(source).toString('base64')}`
);

/** Per section of the table: the call as text, its result, the expected text. */
const checks = {
  duration: ([seconds, text]) => [
    `formatDuration(${JSON.stringify(seconds)})`,
    format.formatDuration(seconds),
    text
  ],
  bytes: ([n, text]) => [
    `formatBytes(${JSON.stringify(n)})`,
    format.formatBytes(n),
    text
  ],
  executed_name: ([[name, id], text]) => [
    `executedNotebookName(${JSON.stringify(name)}, ${JSON.stringify(id)})`,
    format.executedNotebookName(name, id),
    text
  ],
  strip_ansi: ([raw, clean]) => [
    `stripAnsi(${JSON.stringify(raw)})`,
    format.stripAnsi(raw),
    clean
  ]
};

const table = JSON.parse(readFileSync(tablePath, 'utf-8'));
const failures = [];
let count = 0;
for (const [section, examples] of Object.entries(table)) {
  const check = checks[section];
  if (!check) {
    failures.push(`section "${section}" of ${tablePath} has no check here`);
    continue;
  }
  for (const example of examples) {
    count += 1;
    const [call, actual, expected] = check(example);
    if (actual !== expected) {
      failures.push(
        `${call} gave ${JSON.stringify(actual)}, expected ${JSON.stringify(expected)}`
      );
    }
  }
}
if (count === 0) {
  failures.push(`${tablePath} holds no examples`);
}
if (failures.length) {
  console.error(
    `lib/format.js disagrees with ${tablePath} (${failures.length} problem(s), ${count} examples):`
  );
  failures.forEach(line => console.error(`  ${line}`));
  process.exit(1);
}
console.log(`lib/format.js matches all ${count} examples of ${tablePath}`);
