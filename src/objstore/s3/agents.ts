/**
 * HTTP(S) connection agents of the S3 client.
 */
import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';

/*
 * Connection agents whose sockets always have an 'error' listener. Node can emit a socket error
 * after the SDK has taken the response and Node has detached the request's own listener, e.g.
 * EPIPE while still sending a PUT body that the server rejected early (RGW answers NoSuchBucket
 * and closes the connection). With no listener left that is an uncaught exception that kills the
 * process. The request has already succeeded or failed through its own listener; such a late
 * error only means the socket is dead, and Node discards it. The listener counts it.
 */
export class GuardedHttpAgent extends HttpAgent {
  readonly #onError: (err: Error) => void;
  constructor(opts: ConstructorParameters<typeof HttpAgent>[0], onError: (err: Error) => void) {
    super(opts);
    this.#onError = onError;
  }
  override createConnection(...args: Parameters<HttpAgent['createConnection']>): ReturnType<HttpAgent['createConnection']> {
    const socket = super.createConnection(...args);
    socket?.on('error', this.#onError);
    return socket;
  }
}

export class GuardedHttpsAgent extends HttpsAgent {
  readonly #onError: (err: Error) => void;
  constructor(opts: ConstructorParameters<typeof HttpsAgent>[0], onError: (err: Error) => void) {
    super(opts);
    this.#onError = onError;
  }
  override createConnection(...args: Parameters<HttpsAgent['createConnection']>): ReturnType<HttpsAgent['createConnection']> {
    const socket = super.createConnection(...args);
    socket?.on('error', this.#onError);
    return socket;
  }
}
