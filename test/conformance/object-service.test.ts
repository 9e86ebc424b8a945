import { bucketStandIn } from '../support/s3-bucket-stand-in.js';
import { objectServiceConformance } from './object-service.js';

// The object model (src/objects) runs this suite when it lands; until then the stand-in keeps the
// contract the S3 endpoint's tests rely on.
objectServiceConformance('bucket stand-in (test/support)', async () => bucketStandIn(), { objects: false });
