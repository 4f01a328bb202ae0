/**
 * A throw-away one-node Ceph cluster with a RADOS Gateway: a real S3 server
 * (SigV4-checked) for the S3 blob store's tests. One monitor, one OSD that
 * keeps its data in memory (memstore), pools of size 1, cluster auth off,
 * radosgw on a free loopback port, one S3 user. Everything lives in a temp
 * directory; {@linkcode startCeph} takes a few seconds, so a test file
 * starts it once. Needs Debian's `ceph-mon`, `ceph-osd`, `radosgw` and
 * `ceph-common` (without them the tests fail: `.ci/run` installs them).
 *
 * @module
 */
import { AwsClient } from "aws4fetch";

/** A running cluster and how to reach its S3 endpoint. */
export interface Ceph {
  endpoint: string;
  accessKey: string;
  secretKey: string;
  region: string;
  /** Creates a bucket (names must be new). */
  createBucket(name: string): Promise<void>;
  /** Stops radosgw, then the OSD, then the monitor, and removes the directory. */
  stop(): Promise<void>;
}

/**
 * Starts a cluster for a whole test file, at its top level (so that no test
 * owns the processes). The file's last test should call `stop()`; should it
 * not run, the processes are killed when the test process unloads. Without
 * Ceph installed this throws: the S3 tests never pass by skipping.
 */
export async function cephForFile(): Promise<Ceph> {
  if (!cephInstalled()) {
    throw new Error(
      "Ceph is not installed: the S3 tests need ceph-mon ceph-osd radosgw ceph-common (.ci/run installs them)",
    );
  }
  return await startCeph();
}

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}

async function run(dir: string, command: string, args: string[]): Promise<string> {
  const out = await new Deno.Command(command, { args, cwd: dir, stdin: "null" }).output();
  const text = new TextDecoder().decode(out.stdout);
  if (!out.success) {
    throw new Error(`${command} ${args.join(" ")} failed: ${new TextDecoder().decode(out.stderr)}`);
  }
  return text;
}

/** Whether the Ceph programs are installed ({@linkcode cephForFile} throws when not). */
export function cephInstalled(): boolean {
  for (const program of ["ceph-mon", "ceph-osd", "radosgw", "radosgw-admin", "ceph"]) {
    try {
      Deno.statSync(`/usr/bin/${program}`);
    } catch {
      return false;
    }
  }
  return true;
}

/** Starts a cluster in a temp directory on free ports (a few seconds). */
export async function startCeph(): Promise<Ceph> {
  const dir = await Deno.makeTempDir({ prefix: "berth-ceph-" });
  const monPort = freePort();
  const rgwPort = freePort();
  const fsid = crypto.randomUUID();
  const conf = `${dir}/ceph.conf`;
  await Deno.writeTextFile(
    conf,
    `[global]
fsid = ${fsid}
mon host = v2:127.0.0.1:${monPort}
mon initial members = a
auth cluster required = none
auth service required = none
auth client required = none
ms mon client mode = crc secure
ms client mode = crc secure
ms mon service mode = crc secure
ms service mode = crc secure
ms cluster mode = crc secure
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
mon warn on pool no redundancy = false
osd pool default pg num = 1
osd pool default pgp num = 1
osd pool default pg autoscale mode = off
mon max pg per osd = 10000
paxos propose interval = 0.01
paxos min wait = 0.001
osd objectstore = memstore
memstore device bytes = 8589934592
osd crush chooseleaf type = 0
run dir = ${dir}/run
log file = ${dir}/$name.log
admin socket = ${dir}/run/$name.asok
public addr = 127.0.0.1
[mon.a]
mon data = ${dir}/mon
[osd.0]
osd data = ${dir}/osd
[client.rgw.a]
rgw frontends = beast endpoint=127.0.0.1:${rgwPort}
rgw data = ${dir}/rgw
`,
  );
  for (const sub of ["run", "mon", "osd", "rgw"]) await Deno.mkdir(`${dir}/${sub}`);
  const children: Deno.ChildProcess[] = [];
  const killAll = () => {
    for (const child of children) {
      try {
        child.kill("SIGKILL");
      } catch { /* already gone */ }
    }
    try {
      Deno.removeSync(dir, { recursive: true });
    } catch { /* gone */ }
  };
  globalThis.addEventListener("unload", killAll);
  const daemon = (command: string, args: string[]) => {
    const child = new Deno.Command(command, {
      args: ["-f", "-c", conf, ...args],
      cwd: dir,
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
    children.unshift(child); // stopped in reverse order: rgw, OSD, monitor
    return child;
  };
  const stop = async () => {
    for (const child of children) {
      try {
        child.kill("SIGTERM");
      } catch { /* already gone */ }
      const timer = setTimeout(() => {
        try {
          child.kill("SIGKILL");
        } catch { /* gone */ }
      }, 5000);
      await child.status;
      clearTimeout(timer);
    }
    children.length = 0;
    globalThis.removeEventListener("unload", killAll);
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  try {
    await run(dir, "monmaptool", [
      "--create",
      "--addv",
      "a",
      `[v2:127.0.0.1:${monPort}]`,
      "--fsid",
      fsid,
      "monmap",
      "-c",
      conf,
    ]);
    await run(dir, "ceph-mon", ["-c", conf, "--mkfs", "-i", "a", "--monmap", "monmap"]);
    daemon("ceph-mon", ["-i", "a"]);
    // The monitor may take a while on a loaded machine: try again rather than fail.
    for (let attempt = 1;; attempt++) {
      try {
        await run(dir, "ceph", ["-c", conf, "--connect-timeout", "30", "osd", "create"]);
        break;
      } catch (error) {
        if (attempt >= 4) throw error;
      }
    }
    await run(dir, "ceph-osd", ["-c", conf, "-i", "0", "--mkfs"]);
    daemon("ceph-osd", ["-i", "0"]);
    daemon("radosgw", ["-n", "client.rgw.a"]);
    const endpoint = `http://127.0.0.1:${rgwPort}`;
    const deadline = Date.now() + 120_000;
    for (;;) {
      try {
        const response = await fetch(endpoint);
        await response.body?.cancel();
        break;
      } catch (error) {
        if (Date.now() > deadline) throw new Error(`radosgw did not answer: ${error}`);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }
    const accessKey = "BERTHTEST" + crypto.randomUUID().slice(0, 8).toUpperCase();
    const secretKey = crypto.randomUUID() + crypto.randomUUID();
    await run(dir, "radosgw-admin", [
      "-c",
      conf,
      "user",
      "create",
      "--uid",
      "berth",
      "--display-name",
      "berth",
      "--access-key",
      accessKey,
      "--secret",
      secretKey,
    ]);
    const region = "us-east-1";
    const aws = new AwsClient({
      accessKeyId: accessKey,
      secretAccessKey: secretKey,
      region,
      service: "s3",
    });
    return {
      endpoint,
      accessKey,
      secretKey,
      region,
      async createBucket(name) {
        const response = await aws.fetch(`${endpoint}/${name}`, { method: "PUT" });
        const text = await response.text();
        if (!response.ok) throw new Error(`Cannot create bucket ${name}: ${text}`);
      },
      stop,
    };
  } catch (error) {
    await stop();
    throw error;
  }
}
