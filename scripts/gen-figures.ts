/**
 * Renders docs/figures.md from the recorded benchmark runs (bench/results/*.jsonl).
 * `npm run figures`.
 */
import { writeFileSync } from 'node:fs';
import { FIGURES_FILE, readRecords, renderFigures } from '../bench/record.js';

writeFileSync(FIGURES_FILE, renderFigures(readRecords()));
console.log(`wrote ${FIGURES_FILE}`);
