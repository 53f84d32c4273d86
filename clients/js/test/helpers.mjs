// Shared helpers of the client's tests: the hub to talk to, unique ids, a spare hub
// process to stop and start again, polling.
//
// Environment (set by tests/test_js_client.py, which starts a real hub):
//   FLUX_TEST_URL         the hub, e.g. http://127.0.0.1:41234 (required)
//   FLUX_TEST_SERVE       JSON argv that starts another hub on the same store, with
//                         "{port}" where the port goes (optional: restart tests skip)
//   FLUX_TEST_SERVE_ENV   JSON object of environment variables for that command
//   FLUX_TESTS_TIMEOUT_FACTOR  scales waits on slow machines (default 1)

import { spawn } from 'node:child_process';
import { createServer } from 'node:net';

import { FluxClient } from '../flux-client.js';

export const HUB_URL = process.env.FLUX_TEST_URL;
export const SKIP = HUB_URL ? false : 'FLUX_TEST_URL is not set: run through tests/test_js_client.py';
export const FACTOR = Number(process.env.FLUX_TESTS_TIMEOUT_FACTOR ?? '1');

/** A wait scaled for slow machines. */
export const ms = (n) => n * FACTOR;

/** Node ≥ 22 has a WebSocket; Node 20 uses the `ws` package (a devDependency). */
export const WebSocket = globalThis.WebSocket ?? (await import('ws')).default;

let counter = 0;
/** An id prefix no other test uses: `js<random><n>/`. */
export function uniquePrefix() {
  counter += 1;
  return `js${Math.random().toString(36).slice(2, 8)}${counter}/`;
}

/** A client of the test hub (closed by the caller). */
export function client(options = {}, url = HUB_URL) {
  return new FluxClient(url, { WebSocket, reconnect: { initialDelay: 50, maxDelay: 500 }, ...options });
}

/** `{id: {version, properties}}` of every entity the REST API lists under a prefix. */
export async function restState(c, prefix) {
  const out = {};
  for (const e of await c.list({ prefix })) out[e.id] = { version: e.version, properties: e.properties };
  return out;
}

/** Wait until `predicate()` is truthy (polling). */
export async function until(predicate, what, timeout = ms(10_000)) {
  const deadline = Date.now() + timeout;
  for (;;) {
    if (await predicate()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export async function freePort() {
  const server = createServer();
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** Whether a spare hub can be started (FLUX_TEST_SERVE given). */
export const SKIP_SPARE = process.env.FLUX_TEST_SERVE
  ? false
  : 'FLUX_TEST_SERVE is not set: no command to start a second hub';

/**
 * A hub process of our own on the test hub's store, to stop and start again on the
 * same port (what a client sees when its hub restarts).
 */
export class SpareHub {
  /** @param {number} port @param {Record<string, string>} [env] more environment */
  constructor(port, env = {}) {
    this.port = port;
    this.extraEnv = env;
    this.url = `http://127.0.0.1:${port}`;
    this.proc = null;
    this.output = '';
  }

  async start() {
    const argv = JSON.parse(process.env.FLUX_TEST_SERVE).map((a) => a.replace('{port}', String(this.port)));
    const env = { ...process.env, ...JSON.parse(process.env.FLUX_TEST_SERVE_ENV ?? '{}'), ...this.extraEnv };
    this.proc = spawn(argv[0], argv.slice(1), { env, stdio: ['ignore', 'pipe', 'pipe'] });
    const keep = (chunk) => {
      this.output = (this.output + chunk.toString()).slice(-20_000);
    };
    this.proc.stdout.on('data', keep);
    this.proc.stderr.on('data', keep);
    const proc = this.proc;
    await until(async () => {
      if (proc.exitCode !== null) throw new Error(`spare hub exited (${proc.exitCode}):\n${this.output}`);
      try {
        return (await fetch(`${this.url}/readyz`)).ok;
      } catch {
        return false;
      }
    }, `the spare hub on port ${this.port}`, ms(30_000));
  }

  /** SIGTERM: the hub closes its WebSockets with 1001 and exits. */
  async stop() {
    const proc = this.proc;
    if (!proc || proc.exitCode !== null) return;
    const exited = new Promise((resolve) => proc.once('exit', resolve));
    proc.kill('SIGTERM');
    const timer = setTimeout(() => proc.kill('SIGKILL'), ms(10_000));
    await exited;
    clearTimeout(timer);
  }
}
