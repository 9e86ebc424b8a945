import { S3ServiceException } from '@aws-sdk/client-s3';

/** Awaits an SDK call that must fail; its S3 error name and HTTP status (a success throws). */
export async function s3Failure(promise: Promise<unknown>): Promise<{ name: string; status: number | undefined }> {
  try {
    await promise;
  } catch (err) {
    if (err instanceof S3ServiceException) return { name: err.name, status: err.$metadata.httpStatusCode };
    throw err;
  }
  throw new Error('expected the request to fail');
}
