import assert from "node:assert/strict";
import { childrenCpuSeconds, cpuSeconds, peakRss, pidListeningOn } from "./proc.ts";

/** Deno lets only --allow-all read /proc: these run with `deno test -A bench/`, as the bench runs. */
const ignore = (() => {
  try {
    Deno.readTextFileSync("/proc/self/stat");
    return false;
  } catch (error) {
    if (error instanceof Deno.errors.NotCapable) return true;
    throw error;
  }
})();

Deno.test({ name: "cpuSeconds() grows while the process computes", ignore }, () => {
  const before = cpuSeconds(Deno.pid)!;
  // Busy until it shows 0.05 s more (however loaded the machine), with a deadline if it never does.
  const deadline = performance.now() + 20_000;
  let x = 0;
  while (cpuSeconds(Deno.pid)! - before < 0.05 && performance.now() < deadline) {
    for (let i = 0; i < 1e5; i++) x += Math.sqrt(x + i);
  }
  assert.ok(x > 0);
  assert.ok(cpuSeconds(Deno.pid)! - before >= 0.05);
  assert.equal(cpuSeconds(undefined), undefined);
});

Deno.test({ name: "childrenCpuSeconds() counts a finished child", ignore }, async () => {
  const before = childrenCpuSeconds();
  // A fixed amount of work (about 0.3 s of CPU when idle), not a fixed time.
  await new Deno.Command("bash", {
    args: ["-c", "i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done"],
  }).output();
  assert.ok(childrenCpuSeconds() - before >= 0.1);
});

Deno.test({ name: "pidListeningOn() finds the process listening on a port", ignore }, () => {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  assert.equal(pidListeningOn((listener.addr as Deno.NetAddr).port), Deno.pid);
});

Deno.test({ name: "peakRss() sees memory taken while it watches", ignore }, () => {
  const watch = peakRss(Deno.pid);
  const big = new Uint8Array(64 * 1024 * 1024).fill(1);
  const peak = watch.stop()!;
  assert.ok(big[big.length - 1] === 1);
  assert.ok(peak - watch.start! >= 48, `peak ${peak} MiB, start ${watch.start} MiB`);
});
