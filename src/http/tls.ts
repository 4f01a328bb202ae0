/**
 * The certificate and key Berth serves HTTPS with, read and checked once at
 * start-up: a file that cannot be read, is not PEM, holds no certificate or a
 * key that does not parse, a key that is not the certificate's, or a
 * certificate outside its validity period each stop the server with one line
 * that says which and why, instead of a handshake failure on every connection.
 *
 * The certificate file may hold a chain (the server's certificate first, then
 * intermediates); the first one is the server's and is the one checked.
 *
 * @module
 */
import { createPrivateKey, type KeyObject, X509Certificate } from "node:crypto";

/** A certificate chain and its private key, PEM, as `Deno.listenTls` and `Deno.serve` take them. */
export interface TlsFiles {
  cert: string;
  key: string;
}

/** Why the certificate or key cannot be served with (the message is one line). */
export class TlsError extends Error {}

const CERTIFICATE = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/;
const PRIVATE_KEY = /-----BEGIN ((?:RSA |EC |ENCRYPTED )?PRIVATE KEY)-----/;

async function read(what: string, path: string): Promise<string> {
  try {
    return await Deno.readTextFile(path);
  } catch (error) {
    const reason = error instanceof Deno.errors.NotFound
      ? "no such file"
      : (error as Error).message.split("\n")[0];
    throw new TlsError(`cannot read ${what} "${path}": ${reason}`);
  }
}

function firstLine(error: unknown): string {
  return String((error as Error)?.message ?? error).split("\n")[0]!;
}

/** `2026-12-02 13:27:25 UTC` */
function utc(date: Date): string {
  return date.toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
}

/**
 * Reads and checks the certificate chain at `certPath` and the private key at
 * `keyPath`; `now` is when validity is judged. Throws {@linkcode TlsError}.
 */
export async function loadTls(
  certPath: string,
  keyPath: string,
  now: Date = new Date(),
): Promise<TlsFiles> {
  const cert = await read("--tls-cert", certPath);
  const key = await read("--tls-key", keyPath);
  const leafPem = CERTIFICATE.exec(cert)?.[0];
  if (leafPem === undefined) {
    throw new TlsError(
      PRIVATE_KEY.test(cert)
        ? `--tls-cert "${certPath}" holds a private key, not a certificate (are the files swapped?)`
        : `--tls-cert "${certPath}" holds no PEM certificate (-----BEGIN CERTIFICATE-----)`,
    );
  }
  let leaf: X509Certificate;
  try {
    leaf = new X509Certificate(leafPem);
  } catch (error) {
    throw new TlsError(
      `--tls-cert "${certPath}": the certificate does not parse: ${firstLine(error)}`,
    );
  }
  const kind = PRIVATE_KEY.exec(key)?.[1];
  if (kind === undefined) {
    throw new TlsError(
      CERTIFICATE.test(key)
        ? `--tls-key "${keyPath}" holds a certificate, not a private key (are the files swapped?)`
        : `--tls-key "${keyPath}" holds no PEM private key (-----BEGIN PRIVATE KEY-----)`,
    );
  }
  if (kind === "ENCRYPTED PRIVATE KEY") {
    throw new TlsError(`--tls-key "${keyPath}" is encrypted: give the key without a passphrase`);
  }
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey(key);
  } catch (error) {
    throw new TlsError(
      `--tls-key "${keyPath}": the private key does not parse: ${firstLine(error)}`,
    );
  }
  let matches = false;
  try {
    matches = leaf.checkPrivateKey(privateKey);
  } catch { /* a key of another type: no match */ }
  if (!matches) {
    throw new TlsError(
      `--tls-key "${keyPath}" is not the private key of --tls-cert "${certPath}" (${leaf.subject})`,
    );
  }
  const from = leaf.validFromDate;
  const to = leaf.validToDate;
  if (now < from) {
    throw new TlsError(
      `--tls-cert "${certPath}" is not valid yet: valid from ${utc(from)} to ${utc(to)}, now ${
        utc(now)
      }`,
    );
  }
  if (now > to) {
    throw new TlsError(
      `--tls-cert "${certPath}" expired on ${utc(to)} (valid from ${utc(from)}), now ${utc(now)}`,
    );
  }
  return { cert, key };
}
