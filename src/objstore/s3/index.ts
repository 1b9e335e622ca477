/**
 * The S3 bucket provider: {@link S3Bucket} (bucket.ts) with its options (config.ts), error
 * classification (errors.ts), connection agents (agents.ts) and multipart uploads (multipart.ts).
 */
export { S3Bucket } from './bucket.js';
export {
  S3_MAX_PARTS,
  S3_MAX_PUT_BYTES,
  S3_MIN_PART_BYTES,
  S3_OPTION_RANGES,
  type S3BucketConfig,
  type S3Credentials,
  type S3Hooks,
  type S3Operation,
  type S3RequestEvent,
  type S3RetryEvent,
  type S3Stats,
} from './config.js';
export { classify as classifyS3Error, describe as describeS3Error } from './errors.js';
