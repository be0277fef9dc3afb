/**
 * Copies Swagger UI's browser files from the swagger-ui-dist devDependency
 * into the Python package (jupyter_taskrun/static/swagger/), where
 * server/handlers/docs.py serves them for /taskrun/api/docs. Run by the
 * build:labextension scripts, so a wheel built by hatch-jupyter-builder
 * carries them: nothing is fetched at run time.
 *
 * Usage: node scripts/copy-swagger.mjs
 * Exit status: 0 copied; 1 swagger-ui-dist is not installed (run jlpm install).
 */
import { copyFileSync, existsSync, mkdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const source = resolve(here, '../node_modules/swagger-ui-dist');
const target = resolve(here, '../../jupyter_taskrun/static/swagger');
// the page (jupyter_taskrun/server/templates/api_docs.html) loads exactly these
const files = [
  'swagger-ui.css',
  'swagger-ui-bundle.js',
  'swagger-ui-bundle.js.LICENSE.txt',
  'LICENSE',
  'NOTICE'
];

if (!existsSync(source)) {
  console.error(`${source} is missing: run "jlpm install" first`);
  process.exit(1);
}
mkdirSync(target, { recursive: true });
for (const name of files) {
  copyFileSync(resolve(source, name), resolve(target, name));
}
console.log(`copied ${files.join(', ')} to ${target}`);
