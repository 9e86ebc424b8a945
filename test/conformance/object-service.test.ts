import { s3ObjectService } from '../../src/objects/s3-object-service.js';
import { createTestObjectModel } from '../support/object-model.js';
import { bucketStandIn } from '../support/s3-bucket-stand-in.js';
import { objectServiceConformance } from './object-service.js';

// The stand-in keeps the endpoint's unit tests independent of the object model's stores.
objectServiceConformance('bucket stand-in (test/support)', async () => bucketStandIn(), { objects: false });
objectServiceConformance('S3ObjectService over ObjectModel (memory stores)', async () => s3ObjectService((await createTestObjectModel()).model, { bucketPool: 'pool-a' }), { objects: true });
