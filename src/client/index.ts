/**
 * Strata's client library: what the `strata-client` package (packages/client/) exports. Pure
 * clients of the two gRPC APIs; nothing of the servers (no LMDB, LevelDB or AWS SDK).
 *
 * - {@link QueryClient}: reads samples of series ids over a time range from the storage gateways
 *   (one request per block, routed by `x-strata-block`, merged; RAW or RUNS encoding).
 * - {@link WriterClient}: writes samples to the shard aggregators (grouped and batched by shard,
 *   retried) and seals windows.
 * - Errors: `QueryError` / `GrpcCallError` and the writer's `WriteCallError` carry the gRPC status
 *   (`code`) and the server's `ERR_STRATA_*` code (`strataCode`, trailer `strata-error-code`;
 *   docs/errors.md). `StrataError` and `ErrorCode` are the codes themselves.
 * - The wire codec of the read API (`encodeReadRequest`, `decodeReadResponse`, ...) and the run
 *   decoder (`decodeRun`), for callers that speak the protocol themselves.
 */
export { QueryClient, QueryError, DEFAULT_ENCODING, type QueryClientOptions, type QueryOptions, type QueryResult, type ReadEncoding, type SeriesSamples } from './query.js';
export { WriterClient, isRetryable, type SeriesData, type WriterClientOptions, type WriterRetryPolicy, type WriteCallError, type WriteSummary, type SealedBlock, type RequestEvent } from './writer.js';
export { readSampleFile, groupRecords, groupedChunks, SAMPLE_RECORD_BYTES } from './writer-samples.js';
export { GrpcCallError } from './grpc-h2.js';
export {
  READ_METHOD_PATH,
  ENCODING_RAW,
  ENCODING_RUNS,
  encodeReadRequest,
  decodeReadRequest,
  encodeReadResponse,
  decodeReadResponse,
  ProtoDecodeError,
  type ReadRequestFields,
  type ReadResponseParts,
  type ReadResponseView,
} from '../api/read-codec.js';
export { BlockAssembler, mergeSeries, ResponseFormatError } from './block-assembler.js';
export { planQuery, rankEndpoints, type BlockLayout, type BlockRequest } from './query-plan.js';
export { decodeRun, RUN_CODES_VERSION, type Samples } from '../format/run.js';
export { blockKey, DEFAULT_BLOCK_DURATION_MS, MAX_SHARDS, TENANT_PATTERN } from '../format/key.js';
export { ERROR_CODE_TRAILER, errorCodeOfTrailers } from '../api/headers.js';
export type { ClientTlsConfig } from '../common/tls.js';
export { ErrorCode, StrataError, CorruptionError, InvalidArgumentError, UnsupportedVersionError, hasCode } from '../errors.js';
export { buildInfo, type BuildInfo } from '../common/version.js';
