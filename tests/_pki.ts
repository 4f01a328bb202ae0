/**
 * Test helpers for TLS: a throwaway CA made with openssl, a server
 * certificate it signed for 127.0.0.1 and localhost (valid now, expired, not
 * yet valid), and files that cannot be served.
 *
 * @module
 */

const OPENSSL = "/usr/bin/openssl";
const decoder = new TextDecoder();

/** A CA, certificates it signed for 127.0.0.1 and localhost, and bad files, in a temp dir. */
export interface Pki {
  dir: string;
  ca: string;
  caPath: string;
  cert: string;
  key: string;
  expired: string;
  notYetValid: string;
  otherKey: string;
  garbage: string;
}

/** Runs `command`, returning its stdout; throws with its stderr when it fails. */
export async function run(command: string, args: string[], cwd = "."): Promise<string> {
  const out = await new Deno.Command(command, { args, cwd, stdout: "piped", stderr: "piped" })
    .output();
  if (!out.success) {
    throw new Error(`${command} ${args.join(" ")}: ${decoder.decode(out.stderr)}`);
  }
  return decoder.decode(out.stdout);
}

/** `YYYYMMDDHHMMSSZ`, as openssl ca takes dates. */
function asn1Time(date: Date): string {
  return date.toISOString().replace(/[-:T]/g, "").replace(/\.\d+Z$/, "Z");
}

/** Makes a CA and certificates it signed in a new temp dir (`dir`; remove it when done). */
export async function makePki(): Promise<Pki> {
  const dir = await Deno.makeTempDir({ prefix: "berth-tls-" });
  const ssl = (...args: string[]) => run(OPENSSL, args, dir);
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
  await ssl(
    "req",
    "-x509",
    ...ec,
    "-keyout",
    "ca.key",
    "-out",
    "ca.pem",
    "-days",
    "2",
    "-subj",
    "/CN=Berth test CA",
  );
  await ssl("req", ...ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost");
  await ssl(
    "genpkey",
    "-algorithm",
    "EC",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-out",
    "other.key",
  );
  await Deno.writeTextFile(
    `${dir}/ext.cnf`,
    "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
  );
  // openssl ca signs with explicit dates: valid now, expired, not valid yet.
  await Deno.writeTextFile(
    `${dir}/ca.cnf`,
    "[ca]\ndefault_ca = d\n[d]\ndatabase = index.txt\nnew_certs_dir = .\nserial = serial\n" +
      "default_md = sha256\npolicy = p\nunique_subject = no\n[p]\ncommonName = supplied\n",
  );
  await Deno.writeTextFile(`${dir}/index.txt`, "");
  await Deno.writeTextFile(`${dir}/serial`, "01\n");
  const sign = (out: string, start: Date | string, end: Date | string) =>
    ssl(
      "ca",
      "-batch",
      "-config",
      "ca.cnf",
      "-cert",
      "ca.pem",
      "-keyfile",
      "ca.key",
      "-in",
      "server.csr",
      "-out",
      out,
      "-notext",
      "-extfile",
      "ext.cnf",
      "-startdate",
      typeof start === "string" ? start : asn1Time(start),
      "-enddate",
      typeof end === "string" ? end : asn1Time(end),
    );
  const now = Date.now();
  await sign("server.pem", new Date(now - 3600_000), new Date(now + 86400_000));
  await sign("expired.pem", "20200101000000Z", "20200102000000Z");
  await sign("future.pem", "20990101000000Z", "20990201000000Z");
  await Deno.writeTextFile(`${dir}/garbage.pem`, "this is not a certificate\n");
  return {
    dir,
    ca: await Deno.readTextFile(`${dir}/ca.pem`),
    caPath: `${dir}/ca.pem`,
    cert: `${dir}/server.pem`,
    key: `${dir}/server.key`,
    expired: `${dir}/expired.pem`,
    notYetValid: `${dir}/future.pem`,
    otherKey: `${dir}/other.key`,
    garbage: `${dir}/garbage.pem`,
  };
}
