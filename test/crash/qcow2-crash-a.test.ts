/** Crash safety, image variants of group a (see crash-suite.ts); qcow2-crash-b runs group b. */
import { crashSuite } from './crash-suite.js';

crashSuite('qcow2 crash safety (a)', (variant) => variant.group === 'a');
