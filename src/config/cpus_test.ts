import assert from "node:assert/strict";
import { availableCpus, cgroupCpuQuota } from "./cpus.ts";

const files = (entries: Record<string, string>) => (path: string) => entries[path];

Deno.test("cgroup v2 quota: 1.5 CPUs is 2, 'max' is no quota", () => {
  assert.equal(cgroupCpuQuota(files({ "/sys/fs/cgroup/cpu.max": "150000 100000\n" })), 2);
  assert.equal(cgroupCpuQuota(files({ "/sys/fs/cgroup/cpu.max": "max 100000\n" })), undefined);
  assert.equal(cgroupCpuQuota(files({ "/sys/fs/cgroup/cpu.max": "50000 100000\n" })), 1);
});

Deno.test("cgroup v1 quota, and -1 as no quota", () => {
  const v1 = (q: string) =>
    files({ "/sys/fs/cgroup/cpu/cpu.cfs_quota_us": q, "/sys/fs/cgroup/cpu/cpu.cfs_period_us": "100000" });
  assert.equal(cgroupCpuQuota(v1("400000")), 4);
  assert.equal(cgroupCpuQuota(v1("-1")), undefined);
  assert.equal(cgroupCpuQuota(files({})), undefined);
});

Deno.test("the quota caps the CPU count, never raises it", () => {
  const twoCpus = files({ "/sys/fs/cgroup/cpu.max": "200000 100000" });
  assert.equal(availableCpus(64, twoCpus), 2);
  assert.equal(availableCpus(1, twoCpus), 1);
  assert.equal(availableCpus(16, files({})), 16);
  assert.equal(availableCpus(0, files({})), 1);
});
