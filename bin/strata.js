#!/usr/bin/env node
// Runs the compiled CLI (`npm run build` first; `npm start` and `npm run bench` do).
await import('../dist/src/cli/main.js');
