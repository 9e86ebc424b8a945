/**
 * Canned ACLs and anonymous access. A bucket is `private` (only signed requests) or
 * `public-read` (anonymous requests may also read its objects and list its keys); the ACL is set
 * with `x-amz-acl` on CreateBucket or PutBucketAcl, or by a PutBucketAcl body whose grants are
 * exactly those of one of these two. Grants beyond them (x-amz-grant-*, other grantees) are
 * NotImplemented: access is decided per bucket. Objects have no ACL of their own: GetObjectAcl
 * answers the bucket owner's FULL_CONTROL, PutObjectAcl accepts `private` only (a public object
 * in a private bucket would need per-object grants). Anonymous writes are never allowed. Who may
 * reach a bucket at all is access.ts's to decide, before any handler.
 * docs/s3.md ("Canned ACLs") says how this differs from AWS S3.
 */
import type { CannedAcl } from '../../objects/records.js';
import { bucketOrNone } from './access.js';
import type { S3Handler, S3RequestContext } from './bucket-handlers.js';
import type { S3Endpoint } from './endpoints.js';
import { S3Error } from './errors.js';
import { headerOf } from './object-headers.js';
import { childrenNamed, childText, element, readXmlBody, textElement, xmlDocument, type XmlElement } from './xml.js';

/** The canned ACLs this endpoint stores, by their `x-amz-acl` names. */
const STORED_CANNED_ACLS: readonly CannedAcl[] = ['private', 'public-read'];
/** Canned ACLs S3 has that this endpoint refuses by name. */
const REFUSED_CANNED_ACLS: Readonly<Record<string, string>> = {
  'public-read-write': 'anonymous writes are never allowed',
  'authenticated-read': "a bucket is its owner's alone or readable by everyone; make it private or public-read",
  'aws-exec-read': 'there is no EC2 here',
  'bucket-owner-read': 'objects have no ACL of their own',
  'bucket-owner-full-control': 'objects have no ACL of their own',
  'log-delivery-write': 'there is no log delivery',
};
const GRANT_HEADERS = ['x-amz-grant-read', 'x-amz-grant-write', 'x-amz-grant-read-acp', 'x-amz-grant-write-acp', 'x-amz-grant-full-control'];
/** The group every anonymous requester belongs to, as S3 names it in grants. */
export const ALL_USERS_URI = 'http://acs.amazonaws.com/groups/global/AllUsers';
const XSI_NAMESPACE = 'http://www.w3.org/2001/XMLSchema-instance';

/** The canned ACL a request asks for with `x-amz-acl`, undefined when it names none. */
export function cannedAclOf(ctx: Pick<S3RequestContext, 'headers'>): CannedAcl | undefined {
  const grant = GRANT_HEADERS.find((name) => headerOf(ctx.headers, name) !== undefined);
  if (grant !== undefined) throw new S3Error('NotImplemented', `${grant} is not supported: access is set per bucket with a canned ACL (x-amz-acl: private or public-read)`);
  const value = headerOf(ctx.headers, 'x-amz-acl');
  if (value === undefined) return undefined;
  const stored = STORED_CANNED_ACLS.find((acl) => acl === value);
  if (stored !== undefined) return stored;
  const refused = REFUSED_CANNED_ACLS[value];
  if (refused !== undefined) throw new S3Error('NotImplemented', `the canned ACL '${value}' is not supported (${refused}); use private or public-read`);
  throw new S3Error('InvalidArgument', `'${value.slice(0, 80)}' is not a canned ACL; use private or public-read`, { ArgumentName: 'x-amz-acl', ArgumentValue: value.slice(0, 80) });
}

function grantXml(grantee: string, permission: string): string {
  return element('Grant', [grantee, textElement('Permission', permission)]);
}

function canonicalUser(owner: string): string {
  return `<Grantee xmlns:xsi="${XSI_NAMESPACE}" xsi:type="CanonicalUser">${textElement('ID', owner)}${textElement('DisplayName', owner)}</Grantee>`;
}

/** The AccessControlPolicy document of a canned ACL (what GetBucketAcl and GetObjectAcl answer). */
export function accessControlPolicyXml(owner: string, acl: CannedAcl): string {
  const grants = [grantXml(canonicalUser(owner), 'FULL_CONTROL')];
  if (acl === 'public-read') grants.push(grantXml(`<Grantee xmlns:xsi="${XSI_NAMESPACE}" xsi:type="Group">${textElement('URI', ALL_USERS_URI)}</Grantee>`, 'READ'));
  return xmlDocument('AccessControlPolicy', [element('Owner', [textElement('ID', owner), textElement('DisplayName', owner)]), element('AccessControlList', grants)]);
}

/** The canned ACL whose grants a PutBucketAcl body lists exactly; NotImplemented for any other set. */
function cannedAclOfPolicy(policy: XmlElement, owner: string): CannedAcl {
  const list = childrenNamed(policy, 'AccessControlList')[0];
  if (list === undefined) throw new S3Error('MalformedXML', 'the <AccessControlPolicy> has no <AccessControlList>');
  const grants = childrenNamed(list, 'Grant').map((grant) => {
    const grantee = childrenNamed(grant, 'Grantee')[0];
    const permission = childText(grant, 'Permission');
    if (grantee === undefined || permission === undefined) throw new S3Error('MalformedXML', 'every <Grant> needs a <Grantee> and a <Permission>');
    const id = childText(grantee, 'ID');
    const uri = childText(grantee, 'URI');
    return `${id !== undefined ? `user:${id}` : uri !== undefined ? `group:${uri}` : 'other'} ${permission}`;
  });
  const key = [...new Set(grants)].sort().join(', ');
  const ownerFull = `user:${owner} FULL_CONTROL`;
  if (key === ownerFull) return 'private';
  if (key === [`group:${ALL_USERS_URI} READ`, ownerFull].sort().join(', ')) return 'public-read';
  throw new S3Error('NotImplemented', `only the grants of the canned ACLs private (the owner's FULL_CONTROL) and public-read (that and AllUsers READ) are supported, not: ${key || 'no grant'}`);
}

/** The bucket's record, for its owner only (ACLs are the owner's to read and change). */
async function ownedBucket(ctx: S3RequestContext): Promise<{ owner: string; acl: CannedAcl }> {
  const bucket = ctx.bucket as string;
  const info = await bucketOrNone(ctx.objects, ctx.principal, bucket);
  if (info === undefined) throw new S3Error('NoSuchBucket', `the bucket '${bucket}' does not exist`);
  if (info.owner !== ctx.principal.owner) throw new S3Error('AccessDenied', `only the owner of the bucket '${bucket}' may read or change its ACL`);
  return info;
}

const getBucketAcl: S3Handler = async (ctx) => {
  const info = await ownedBucket(ctx);
  return { status: 200, xml: accessControlPolicyXml(info.owner, info.acl) };
};

const putBucketAcl: S3Handler = async (ctx) => {
  const info = await ownedBucket(ctx);
  const fromHeader = cannedAclOf(ctx);
  if (fromHeader !== undefined && ctx.hasBody) throw new S3Error('InvalidRequest', 'send either x-amz-acl or an <AccessControlPolicy> body, not both');
  const acl = fromHeader ?? (ctx.hasBody ? cannedAclOfPolicy(await readXmlBody(ctx.body(), 'AccessControlPolicy'), info.owner) : undefined);
  if (acl === undefined) throw new S3Error('InvalidRequest', 'PutBucketAcl needs x-amz-acl (private or public-read) or an <AccessControlPolicy> body');
  await ctx.objects.setBucketAcl(ctx.principal, ctx.bucket as string, acl);
  return { status: 200 };
};

/** Checks that the object's current (or named) version exists (NoSuchKey, NoSuchVersion). */
async function requireObject(ctx: S3RequestContext): Promise<void> {
  const versionId = ctx.query.get('versionId');
  await ctx.objects.getObject({ bucket: ctx.bucket as string, key: ctx.key as string, ...(versionId === undefined ? {} : { versionId }) });
}

/**
 * An object's ACL is its bucket owner's FULL_CONTROL: objects follow their bucket, whose owner is
 * the one user with control of them (as S3's BucketOwnerEnforced). Not the version's writer: after
 * `strata bucket chown` the writer (the old owner) has no access at all.
 */
const getObjectAcl: S3Handler = async (ctx) => {
  const info = await ownedBucket(ctx);
  await requireObject(ctx);
  return { status: 200, xml: accessControlPolicyXml(info.owner, 'private') };
};

const putObjectAcl: S3Handler = async (ctx) => {
  await ownedBucket(ctx);
  const acl = cannedAclOf(ctx);
  if (ctx.hasBody) throw new S3Error('NotImplemented', 'object ACL grants are not supported: objects follow their bucket\'s canned ACL (PutBucketAcl)');
  if (acl === undefined) throw new S3Error('InvalidRequest', 'PutObjectAcl needs x-amz-acl: private');
  if (acl !== 'private') {
    throw new S3Error('NotImplemented', `an object ACL other than private is not supported (objects follow their bucket's canned ACL); make the bucket public-read with PutBucketAcl instead`);
  }
  await requireObject(ctx);
  return { status: 200 };
};

export const ACL_HANDLERS: Partial<Record<S3Endpoint, S3Handler>> = {
  GetBucketAcl: getBucketAcl,
  PutBucketAcl: putBucketAcl,
  GetObjectAcl: getObjectAcl,
  PutObjectAcl: putObjectAcl,
};
