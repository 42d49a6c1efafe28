// A minimal resolver for eslint-plugin-import: NodeNext sources import `./x.js` for `./x.ts`, and
// `@wanmig/<lib>` is a path alias to `libs/<lib>/src/index.ts`. Written here because the usual
// TypeScript resolver pulls in a native binding whose other-platform packages break `npm ci`.
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const found = (p) => ({ found: true, path: p });

exports.interfaceVersion = 2;
exports.resolve = (source, file) => {
  const alias = /^@wanmig\/([a-z-]+)$/.exec(source);
  if (alias) {
    const target = path.join(root, 'libs', alias[1], 'src', 'index.ts');
    return fs.existsSync(target) ? found(target) : { found: false };
  }
  if (source.startsWith('.')) {
    const base = path.resolve(path.dirname(file), source);
    for (const candidate of [base.replace(/\.js$/, '.ts'), base, `${base}.ts`, path.join(base, 'index.ts')]) {
      if (fs.existsSync(candidate) && fs.statSync(candidate).isFile()) return found(candidate);
    }
    return { found: false };
  }
  if (source.startsWith('node:') || require('node:module').isBuiltin(source)) return { found: true, path: null };
  try {
    return found(require.resolve(source, { paths: [path.dirname(file)] }));
  } catch {
    // Packages that only export ESM entry points: treat as external and resolved.
    return { found: true, path: null };
  }
};
