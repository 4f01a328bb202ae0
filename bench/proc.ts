/**
 * What the bench reads from `/proc` about a server process: CPU time used,
 * peak resident memory, and which process listens on a port.
 *
 * @module
 */

/** Clock ticks per second for `/proc/PID/stat` times (`getconf CLK_TCK`; 100 on Linux). */
const TICKS = 100;

/** Seconds of CPU (user + system) a process has used so far; `undefined` if it cannot be read. */
export function cpuSeconds(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined;
  try {
    const fields = statFields(Deno.readTextFileSync(`/proc/${pid}/stat`));
    return (Number(fields[13]) + Number(fields[14])) / TICKS;
  } catch {
    return undefined;
  }
}

/**
 * Seconds of CPU used by this process's children that have been waited for
 * (`cutime + cstime`): after a `Deno.Command` finishes, the delta is its cost.
 */
export function childrenCpuSeconds(): number {
  const fields = statFields(Deno.readTextFileSync("/proc/self/stat"));
  return (Number(fields[15]) + Number(fields[16])) / TICKS;
}

/** `/proc/PID/stat` split into fields, the first being the PID (the name may hold spaces). */
function statFields(stat: string): string[] {
  const close = stat.lastIndexOf(")");
  return [stat.slice(0, stat.indexOf(" ")), "comm", ...stat.slice(close + 2).split(" ")];
}

function statusKib(pid: number, key: string): number | undefined {
  try {
    const status = Deno.readTextFileSync(`/proc/${pid}/status`);
    const match = new RegExp(`^${key}:\\s+(\\d+) kB`, "m").exec(status);
    return match ? Number(match[1]) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Tracks a process's peak RSS over a stretch of work: resets the kernel's
 * high-water mark (`clear_refs` 5) when it may, and samples `VmRSS` every
 * 10 ms as well, so the figure is right either way. `stop()` gives the
 * peak in MiB, `start` the RSS when it began.
 */
export function peakRss(
  pid: number | undefined,
): { start: number | undefined; stop(): number | undefined } {
  if (pid === undefined) return { start: undefined, stop: () => undefined };
  let reset = false;
  try {
    Deno.writeTextFileSync(`/proc/${pid}/clear_refs`, "5");
    reset = true;
  } catch { /* not ours: sampling only */ }
  let peak = statusKib(pid, "VmRSS") ?? 0;
  const timer = setInterval(() => peak = Math.max(peak, statusKib(pid, "VmRSS") ?? 0), 10);
  return {
    /** RSS at the start, MiB. */
    start: peak / 1024,
    stop() {
      clearInterval(timer);
      const hwm = reset ? statusKib(pid, "VmHWM") ?? 0 : 0;
      return Math.max(peak, hwm, statusKib(pid, "VmRSS") ?? 0) / 1024;
    },
  };
}

/**
 * The PID of the process listening on a TCP `port` (IPv4 or IPv6): the
 * socket's inode from `/proc/net/tcp{,6}`, then the process holding it
 * among `/proc/*\/fd`. `undefined` when it is not visible to this user.
 */
export function pidListeningOn(port: number): number | undefined {
  const inodes = new Set<string>();
  const hexPort = port.toString(16).toUpperCase().padStart(4, "0");
  for (const file of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    let text = "";
    try {
      text = Deno.readTextFileSync(file);
    } catch {
      continue;
    }
    for (const line of text.split("\n").slice(1)) {
      const cols = line.trim().split(/\s+/);
      // cols[1] local address "ADDR:PORT", cols[3] state (0A = LISTEN), cols[9] inode
      if (cols[1]?.endsWith(`:${hexPort}`) && cols[3] === "0A") inodes.add(cols[9]!);
    }
  }
  if (inodes.size === 0) return undefined;
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    try {
      for (const fd of Deno.readDirSync(`/proc/${entry.name}/fd`)) {
        const link = Deno.readLinkSync(`/proc/${entry.name}/fd/${fd.name}`);
        const inode = /^socket:\[(\d+)\]$/.exec(link)?.[1];
        if (inode && inodes.has(inode)) return Number(entry.name);
      }
    } catch { /* gone, or not ours */ }
  }
  return undefined;
}
