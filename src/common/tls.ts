/**
 * Optional TLS for Strata's gRPC servers and clients, configured by file paths (PEM), e.g. a
 * mounted Kubernetes Secret from cert-manager.
 *
 * - Server: `{ certFile, keyFile, clientCaFile? }`. With `clientCaFile`, clients must present a
 *   certificate signed by that CA (mTLS); without it, any client may connect over TLS.
 * - Client: `{ caFile?, certFile?, keyFile?, serverName? }`. Without `caFile` the system's roots
 *   are trusted; `certFile` + `keyFile` are the client certificate for mTLS; `serverName`
 *   overrides the name checked against the server certificate (when connecting by IP or through
 *   a proxy).
 *
 * Files are read once, when the credentials are built (certificate rotation needs a restart).
 * Problems are StrataError CONFIG naming the option and the file; no key material ever appears
 * in a message.
 */
import { readFileSync } from 'node:fs';
import { createSecureContext } from 'node:tls';
import { credentials, ServerCredentials, type ChannelCredentials, type ChannelOptions } from '@grpc/grpc-js';
import { z } from 'zod';
import { ErrorCode, StrataError } from '../errors.js';

/** Server TLS options (the `tls` key of a server config). */
export const serverTlsSchema = z.strictObject({
  /** PEM certificate chain of the server. */
  certFile: z.string().min(1),
  /** PEM private key of the server. */
  keyFile: z.string().min(1),
  /** PEM CA bundle; when set, clients must present a certificate it signed (mTLS). */
  clientCaFile: z.string().min(1).optional(),
});

/** Server TLS options. */
export type ServerTlsConfig = z.output<typeof serverTlsSchema>;

/** Client TLS options. */
export interface ClientTlsConfig {
  /** PEM CA bundle to verify the server with (default: the system's roots). */
  readonly caFile?: string;
  /** PEM client certificate chain (mTLS); needs keyFile. */
  readonly certFile?: string;
  /** PEM client private key (mTLS); needs certFile. */
  readonly keyFile?: string;
  /** Name to verify the server certificate against instead of the target's host. */
  readonly serverName?: string;
}

function tlsError(message: string): StrataError {
  return new StrataError(ErrorCode.CONFIG, `invalid TLS config: ${message}`);
}

function readPem(option: string, path: string): Buffer {
  let data: Buffer;
  try {
    data = readFileSync(path);
  } catch (err) {
    throw tlsError(`${option}: cannot read ${path} (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  if (!data.includes('-----BEGIN ')) throw tlsError(`${option}: ${path} holds no PEM data`);
  return data;
}

/** Checks that a certificate and key go together and that a CA bundle parses (OpenSSL's reason). */
function checkPair(prefix: string, cert: Buffer | null, key: Buffer | null, ca: Buffer | null): void {
  try {
    createSecureContext({ ...(cert ? { cert } : {}), ...(key ? { key } : {}), ...(ca ? { ca } : {}) });
  } catch (err) {
    const reason = (err as NodeJS.ErrnoException).code ?? (err as Error).message.split('\n')[0];
    throw tlsError(`${prefix}: the certificate, key or CA file cannot be used (${reason})`);
  }
}

/**
 * gRPC server credentials: insecure without `tls`, TLS with it, mTLS when `clientCaFile` is set.
 * @throws StrataError CONFIG naming the option of an unreadable or invalid file.
 */
export function serverCredentials(tls: ServerTlsConfig | undefined, option = 'tls'): ServerCredentials {
  if (!tls) return ServerCredentials.createInsecure();
  const cert = readPem(`${option}.certFile`, tls.certFile);
  const key = readPem(`${option}.keyFile`, tls.keyFile);
  const ca = tls.clientCaFile !== undefined ? readPem(`${option}.clientCaFile`, tls.clientCaFile) : null;
  checkPair(option, cert, key, ca);
  return ServerCredentials.createSsl(ca, [{ cert_chain: cert, private_key: key }], ca !== null);
}

/** Credentials and channel options of a client channel. */
export interface ClientChannelSecurity {
  readonly credentials: ChannelCredentials;
  readonly channelOptions: ChannelOptions;
}

/** Client TLS material, read and checked: PEM buffers (null when not configured). */
interface ClientTlsMaterial {
  readonly ca: Buffer | null;
  readonly cert: Buffer | null;
  readonly key: Buffer | null;
}

function clientTlsMaterial(tls: ClientTlsConfig, option: string): ClientTlsMaterial {
  if ((tls.certFile === undefined) !== (tls.keyFile === undefined)) throw tlsError(`${option}: a client certificate needs both certFile and keyFile`);
  const ca = tls.caFile !== undefined ? readPem(`${option}.caFile`, tls.caFile) : null;
  const cert = tls.certFile !== undefined ? readPem(`${option}.certFile`, tls.certFile) : null;
  const key = tls.keyFile !== undefined ? readPem(`${option}.keyFile`, tls.keyFile) : null;
  checkPair(option, cert, key, ca);
  return { ca, cert, key };
}

/**
 * gRPC channel credentials: insecure without `tls`, TLS with it (`{}` trusts the system roots).
 * @throws StrataError CONFIG naming the option of an unreadable or invalid file.
 */
export function clientChannelSecurity(tls: ClientTlsConfig | undefined, option = 'tls'): ClientChannelSecurity {
  if (!tls) return { credentials: credentials.createInsecure(), channelOptions: {} };
  const { ca, cert, key } = clientTlsMaterial(tls, option);
  const channelOptions: ChannelOptions =
    tls.serverName !== undefined ? { 'grpc.ssl_target_name_override': tls.serverName, 'grpc.default_authority': tls.serverName } : {};
  return { credentials: credentials.createSsl(ca, key, cert), channelOptions };
}

/** Options of a TLS connection made with node:tls / node:http2 (see {@link clientTlsOptions}). */
export interface ClientTlsOptions {
  readonly ca?: Buffer;
  readonly cert?: Buffer;
  readonly key?: Buffer;
  /** Name sent as SNI and checked against the server certificate (the target's host if absent). */
  readonly servername?: string;
}

/**
 * The same client TLS settings as {@link clientChannelSecurity}, as node:tls connect options (for
 * transports built on node:http2). `{}` trusts the system roots.
 * @throws StrataError CONFIG naming the option of an unreadable or invalid file.
 */
export function clientTlsOptions(tls: ClientTlsConfig, option = 'tls'): ClientTlsOptions {
  const { ca, cert, key } = clientTlsMaterial(tls, option);
  return {
    ...(ca ? { ca } : {}),
    ...(cert ? { cert } : {}),
    ...(key ? { key } : {}),
    ...(tls.serverName !== undefined ? { servername: tls.serverName } : {}),
  };
}
