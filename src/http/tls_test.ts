import assert from "node:assert/strict";
import { loadTls, TlsError } from "./tls.ts";

/** A self-signed certificate and its key (EC or RSA), and another key, in a temp dir. */
async function files(algorithm: "ec" | "rsa" = "ec") {
  const dir = await Deno.makeTempDir({ prefix: "berth-tls-unit-" });
  const newkey = algorithm === "ec"
    ? ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
    : ["-newkey", "rsa:2048"];
  for (const name of ["server", "other"]) {
    const out = await new Deno.Command("/usr/bin/openssl", {
      args: ["req", "-x509", ...newkey, "-nodes", "-keyout", `${name}.key`, "-out", `${name}.pem`]
        .concat(["-days", "1", "-subj", "/CN=localhost"]),
      cwd: dir,
      stdout: "null",
      stderr: "piped",
    }).output();
    assert.ok(out.success, new TextDecoder().decode(out.stderr));
  }
  return {
    dir,
    cert: `${dir}/server.pem`,
    key: `${dir}/server.key`,
    otherKey: `${dir}/other.key`,
    [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }),
  };
}

async function rejects(promise: Promise<unknown>, message: RegExp): Promise<void> {
  await assert.rejects(promise, (error: Error) => {
    assert.ok(error instanceof TlsError, String(error));
    assert.match(error.message, message);
    assert.ok(!error.message.includes("\n"), `more than one line: ${error.message}`);
    return true;
  });
}

Deno.test("loadTls() returns the PEM files of a certificate and its key, EC or RSA, chains too", async () => {
  for (const algorithm of ["ec", "rsa"] as const) {
    await using f = await files(algorithm);
    const loaded = await loadTls(f.cert, f.key);
    assert.equal(loaded.cert, await Deno.readTextFile(f.cert));
    assert.equal(loaded.key, await Deno.readTextFile(f.key));
    // A chain: the server's certificate first.
    const chain = `${f.dir}/chain.pem`;
    await Deno.writeTextFile(chain, loaded.cert + (await Deno.readTextFile(`${f.dir}/other.pem`)));
    assert.ok((await loadTls(chain, f.key)).cert.startsWith(loaded.cert));
  }
});

Deno.test("loadTls() names the file it cannot read", async () => {
  await using f = await files();
  await rejects(
    loadTls(`${f.dir}/missing.pem`, f.key),
    /cannot read --tls-cert ".*missing\.pem": no such file/,
  );
  await rejects(
    loadTls(f.cert, `${f.dir}/missing.key`),
    /cannot read --tls-key ".*missing\.key": no such file/,
  );
});

Deno.test("loadTls() refuses files that are not PEM, swapped files and keys that do not parse", async () => {
  await using f = await files();
  const garbage = `${f.dir}/garbage`;
  await Deno.writeTextFile(garbage, "hello\n");
  await rejects(loadTls(garbage, f.key), /--tls-cert ".*garbage" holds no PEM certificate/);
  await rejects(loadTls(f.cert, garbage), /--tls-key ".*garbage" holds no PEM private key/);
  await rejects(loadTls(f.key, f.cert), /--tls-cert .* holds a private key, not a certificate/);
  await rejects(loadTls(f.cert, f.cert), /--tls-key .* holds a certificate, not a private key/);
  const broken = `${f.dir}/broken.pem`;
  await Deno.writeTextFile(
    broken,
    "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
  );
  await rejects(loadTls(broken, f.key), /the certificate does not parse/);
  await Deno.writeTextFile(
    broken,
    "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
  );
  await rejects(loadTls(f.cert, broken), /the private key does not parse/);
  await Deno.writeTextFile(
    broken,
    "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
  );
  await rejects(loadTls(f.cert, broken), /is encrypted/);
});

Deno.test("loadTls() refuses a key that is not the certificate's", async () => {
  await using f = await files();
  await rejects(
    loadTls(f.cert, f.otherKey),
    /other\.key" is not the private key of --tls-cert .*\(CN=localhost\)/,
  );
  await using rsa = await files("rsa");
  await rejects(loadTls(f.cert, rsa.key), /is not the private key of --tls-cert/);
});

Deno.test("loadTls() refuses a certificate outside its validity period, giving the dates", async () => {
  await using f = await files();
  const day = 86_400_000;
  await rejects(
    loadTls(f.cert, f.key, new Date(Date.now() + 2 * day)),
    /expired on \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \(valid from .* UTC\), now .* UTC/,
  );
  await rejects(
    loadTls(f.cert, f.key, new Date(Date.now() - day)),
    /is not valid yet: valid from .* UTC to .* UTC, now .* UTC/,
  );
  await loadTls(f.cert, f.key, new Date(Date.now() + day / 2));
});
