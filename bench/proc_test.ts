import assert from "node:assert/strict";
import { childrenCpuSeconds, cpuSeconds, peakRss, pidListeningOn } from "./proc.ts";

Deno.test("cpuSeconds() grows while the process computes", () => {
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

Deno.test("childrenCpuSeconds() counts a finished child", async () => {
  const before = childrenCpuSeconds();
  // A fixed amount of work (about 0.3 s of CPU when idle), not a fixed time.
  await new Deno.Command("bash", {
    args: ["-c", "i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done"],
  }).output();
  assert.ok(childrenCpuSeconds() - before >= 0.1);
});

Deno.test("pidListeningOn() finds the process listening on a port", () => {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  assert.equal(pidListeningOn((listener.addr as Deno.NetAddr).port), Deno.pid);
});

Deno.test("peakRss() sees memory taken while it watches", () => {
  const watch = peakRss(Deno.pid);
  const big = new Uint8Array(64 * 1024 * 1024).fill(1);
  const peak = watch.stop()!;
  assert.ok(big[big.length - 1] === 1);
  assert.ok(peak - watch.start! >= 48, `peak ${peak} MiB, start ${watch.start} MiB`);
});
