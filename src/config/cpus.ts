/**
 * How many CPUs this process may use: the smaller of the CPUs it may run on and its cgroup CPU
 * quota (what `docker run --cpus`, Kubernetes limits and systemd's CPUQuota set). A container on a
 * 64-core host with a 2-CPU quota gets 2 workers, not 64: more would only contend for the quota.
 */

/** Reads a file's text, or undefined when it is not there (the cgroup files depend on the host). */
export type ReadText = (path: string) => string | undefined;

function readText(path: string): string | undefined {
  try {
    return Deno.readTextFileSync(path);
  } catch {
    return undefined;
  }
}

/**
 * CPUs from a cgroup quota, rounded up (1.5 CPUs is 2 workers: the half is still usable), or
 * undefined when there is no quota. cgroup v2 first (`cpu.max`: "max 100000" or
 * "150000 100000"), then v1 (`cpu.cfs_quota_us`, -1 for none, and `cpu.cfs_period_us`).
 */
export function cgroupCpuQuota(read: ReadText = readText): number | undefined {
  const v2 = read("/sys/fs/cgroup/cpu.max")?.trim().split(/\s+/);
  if (v2 && v2.length === 2) {
    if (v2[0] === "max") return undefined;
    return quota(Number(v2[0]), Number(v2[1]));
  }
  const v1Quota = read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us") ??
    read("/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us");
  const v1Period = read("/sys/fs/cgroup/cpu/cpu.cfs_period_us") ??
    read("/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us");
  if (v1Quota === undefined || v1Period === undefined) return undefined;
  return quota(Number(v1Quota.trim()), Number(v1Period.trim()));
}

function quota(quotaUs: number, periodUs: number): number | undefined {
  if (!Number.isFinite(quotaUs) || !Number.isFinite(periodUs) || quotaUs <= 0 || periodUs <= 0) {
    return undefined;
  }
  return Math.max(1, Math.ceil(quotaUs / periodUs));
}

/** The CPUs this process may use (at least 1). */
export function availableCpus(
  cpus: number = navigator.hardwareConcurrency,
  read: ReadText = readText,
): number {
  const limit = cgroupCpuQuota(read);
  return Math.max(1, Math.min(cpus || 1, limit ?? Infinity));
}
