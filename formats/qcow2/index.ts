/** formats/qcow2: the qcow2 image format over a HostFile. Knows nothing of stores or exports. */
import type { ImageFormat } from '../../src/core/image.js';
import { probeQcow2 } from './header.js';
import { Qcow2Image } from './image.js';

export { Qcow2Image } from './image.js';
export { probeQcow2 } from './header.js';
export { resolveCreateOptions } from './create.js';
export { layoutQcow2, LAYOUT_METADATA_BYTES_MAX, type Qcow2Layout, type Qcow2LayoutRun } from './layout.js';
export type * from './types.js';

export const qcow2Format: ImageFormat = {
  name: 'qcow2',
  probe: probeQcow2,
  open: (file, options) => Qcow2Image.open(file, options),
};
