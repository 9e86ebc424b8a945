/** Crash safety, image variants of group b (see crash-suite.ts); qcow2-crash-a runs group a. */
import { crashSuite } from './crash-suite.js';

crashSuite('qcow2 crash safety (b)', (variant) => variant.group === 'b');
