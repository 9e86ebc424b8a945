/**
 * How the REST API spells an error's fix (core/errors.ts ErrorFix): the request field, query
 * parameter or route a REST client uses. The CLI spells the same fixes with its flags and commands
 * (src/cli/remote/fixes.ts).
 */
import { renderFix, type ErrorFix } from '../../core/errors.js';

const seg = encodeURIComponent;

function spelling(fix: ErrorFix): string {
  if ('literal' in fix) return '';
  if ('option' in fix) {
    switch (fix.option) {
      case 'allowShrink':
        return '"allowShrink": true';
      case 'force':
        return '?force=true';
      case 'sizeBytes':
        return '?sizeBytes=N';
      case 'name':
        return '{"name": "NEW"}';
      case 'purge':
        return '?purge=true';
    }
  }
  switch (fix.operation) {
    case 'protectSnapshot':
    case 'unprotectSnapshot':
      return `PATCH /v1/pools/${seg(fix.pool)}/volumes/${seg(fix.volume)}/snapshots/${seg(fix.snapshot)} {"protected": ${fix.operation === 'protectSnapshot'}}`;
    case 'setPoolQuota':
      return `PATCH /v1/pools/${seg(fix.pool)} {"quotaBytes": N}`;
    case 'setSnapshotLimit':
      return `PATCH /v1/pools/${seg(fix.pool)}/volumes/${seg(fix.volume)} {"snapshotLimit": N}`;
    case 'removeFromGroup':
      return `DELETE /v1/groups/${seg(fix.group)}/members/${seg(fix.pool)}/${seg(fix.volume)}`;
    case 'deleteGroupSnapshot':
      return `DELETE /v1/groups/${seg(fix.group)}/snapshots/${seg(fix.snapshot)}`;
    case 'stopExports':
      return fix.exports.length === 0 ? 'DELETE /v1/exports/{id} (GET /v1/exports lists them)' : fix.exports.map((e) => `DELETE /v1/exports/${seg(e.id)}`).join(' and ');
    case 'listPools':
      return 'GET /v1/pools';
    case 'listVolumes':
      return `GET /v1/pools/${seg(fix.pool)}/volumes`;
    case 'listSnapshots':
      return `GET /v1/pools/${seg(fix.pool)}/volumes/${seg(fix.volume)}/snapshots`;
    case 'listTrash':
      return `GET /v1/pools/${seg(fix.pool)}/trash`;
    case 'listJobs':
      return 'GET /v1/jobs';
    case 'listExports':
      return 'GET /v1/exports';
    case 'listGroups':
      return 'GET /v1/groups';
    case 'listGroupSnapshots':
      return `GET /v1/groups/${seg(fix.group)}/snapshots`;
    case 'listUsers':
      return 'GET /v1/users';
    case 'listBuckets':
      return 'GET /v1/buckets';
    case 'removeBuckets': {
      const bucket = fix.buckets.length === 1 ? seg(fix.buckets[0] as string) : '{bucket}';
      return `PATCH /v1/buckets/${bucket} {"owner": "USER"} or DELETE /v1/buckets/${bucket}?purge=true`;
    }
  }
}

/** The fix as a REST client would apply it (the error body's "hint"). */
export function restHint(fix: ErrorFix): string {
  return renderFix(fix, spelling(fix));
}
