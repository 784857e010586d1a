"""Issue 12's benchmark: a kvm pod's start-up against a bare VM on the same kernel.

- ``rkt run --stage1-name=coreos.com/rkt/stage1-kvm`` of a cached busybox image
  whose app prints one line, timed to that line on rkt's stdout, against bare
  qemu booting the same kernel (same machine type, kernel command line, memory
  and accelerator) with an initramfs whose /init prints one line and powers
  off, timed to that line: ratio <= 1.3.
- The split of one rkt run: stage0 (rkt start to qemu start), firmware and
  qemu set-up, the kernel (to /init), the initramfs (modules, the 9p mount,
  python3 starting the guest side), the pod (the supervisor to the app's line),
  from the guest's own uptime stamps (``/rkt/kvm-init-uptime``,
  ``/rkt/kvm-booted``) and the host's clock.
"""

from __future__ import annotations

import os
import select
import shutil
import statistics
import subprocess
import time
from pathlib import Path

from common import RKT, Env, report, run_and_save, workdir

from rkt_stage1_kvm import image as kvm_image
from rkt_stage1_kvm import vm
from rkt_testing.aci import build_aci, image_manifest

KVM = "--stage1-name=coreos.com/rkt/stage1-kvm"
REPEAT = 5


def first_line(command: list[str], env: dict[str, str] | None = None) -> tuple[float, bytes]:
    """Seconds until ``command`` prints its first line on stdout, and that line."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               stdin=subprocess.DEVNULL, env=env)
    assert process.stdout is not None
    seen = b""
    line_at = None
    while line_at is None:
        ready, _, _ = select.select([process.stdout], [], [], 120)
        if not ready:
            process.kill()
            raise SystemExit(f"no output from {command[0]} within 120 s")
        chunk = os.read(process.stdout.fileno(), 4096)
        if not chunk:
            raise SystemExit(f"{command[0]} ended without output")
        seen += chunk
        # the bare VM's console also carries the kernel's few "[ time] ..." lines
        lines = [line for line in seen.split(b"\n")[:-1] if not line.startswith(b"[")]
        if lines:
            line_at = time.perf_counter() - start
    process.communicate()
    return line_at, lines[0]


def bare_vm(base: Path, kernel: Path, accel: vm.Accelerator) -> list[str]:
    init = ("#!/bin/busybox sh\n/bin/busybox mount -t proc proc /proc\n"
            "/bin/busybox cat /proc/uptime\n/bin/busybox reboot -f\n")
    initrd = base / "bare.cpio"
    kvm_image.write_initramfs(initrd, init, [])
    size = vm.Size(vm.BASE_MEMORY + vm.DEFAULT_APP_MEMORY, 1)
    return [vm.qemu_binary(), "-machine", f"microvm,accel={accel.name}",
            *vm.cpu_model(accel.name),
            "-m", str(size.memory_mib), "-smp", str(size.cpus), "-nodefaults",
            "-no-user-config", "-no-reboot", "-display", "none", "-kernel", str(kernel),
            "-initrd", str(initrd), "-append", vm.kernel_cmdline(accel.name, debug=False),
            "-chardev", "file,id=out,path=/dev/stdout", "-serial", "chardev:out"]


def split(env: Env, uuid: str, started: float, line_at: float) -> dict[str, float]:
    """Where one rkt run's time to the app's first line went."""
    pod = env.data / "pods" / "run" / uuid
    rkt_dir = pod / "stage1" / "rootfs" / "rkt"
    qemu_started = (pod / "pid").stat().st_mtime - started
    booted_host = (rkt_dir / "kvm-booted").stat().st_mtime - started
    init_uptime = float((rkt_dir / "kvm-init-uptime").read_text())
    booted_uptime = float((rkt_dir / "kvm-booted").read_text())
    firmware = booted_host - qemu_started - booted_uptime
    return {"stage0": qemu_started, "firmware+qemu": firmware, "kernel": init_uptime,
            "initramfs": booted_uptime - init_uptime, "pod to app output": line_at - booted_host}


def main() -> list[dict[str, object]]:
    base = workdir("rkt-bench-kvm-")
    results: list[dict[str, object]] = []
    try:
        image = build_aci(base / "hello.aci", busybox=True, compression="none",
                          manifest=image_manifest("bench.example/hello",
                                                  exec_=["/bin/echo", "hello from the vm"]))
        env = Env(base / "env")
        image_id = env.rkt("--insecure-options=image", "fetch", "--full",
                           str(image)).stdout.decode().strip()
        env.rkt("run", KVM, image_id)  # warm: stage1 imported, tree rendered, accel probed
        pod = next((env.data / "pods" / "run").iterdir())
        kernel = pod / "stage1" / "rootfs" / kvm_image.KERNEL
        accel = vm.choose_accelerator(vm.qemu_binary(), kernel,
                                      env.data / "tmp" / "kvm-accel.json")
        # the kernel rkt boots: the bzImage's ELF payload, unpacked once per kernel
        booted = vm.uncompressed_kernel(kernel, env.data / "tmp")
        bare_kernel = base / "vmlinux"
        shutil.copyfile(booted, bare_kernel)
        bare = bare_vm(base, bare_kernel, accel)
        print(f"kernel: {'uncompressed ELF (PVH entry)' if booted != kernel else 'bzImage'}")
        print(f"accelerator: {accel.name}"
              + (f" ({accel.fallback_reason})" if accel.fallback_reason else ""))
        ours: list[float] = []
        baseline: list[float] = []
        splits: list[dict[str, float]] = []
        bare_splits: list[dict[str, float]] = []
        for round_ in range(REPEAT):
            for which in ((0, 1) if round_ % 2 == 0 else (1, 0)):
                if which == 1:
                    line_at, line = first_line(bare)
                    baseline.append(line_at)
                    kernel_s = float(line.split()[0])  # the guest's uptime at /init
                    bare_splits.append({"firmware+qemu": line_at - kernel_s,
                                        "kernel": kernel_s})
                    continue
                uuid_file = base / "uuid"
                started = time.time()
                line_at, _ = first_line([RKT, *env.flags(), "run", KVM,
                                         f"--uuid-file-save={uuid_file}", image_id])
                ours.append(line_at)
                splits.append(split(env, uuid_file.read_text(), started, line_at))
        results.append(report(f"rkt run to first output (kvm, {accel.name})",
                              statistics.median(ours), statistics.median(baseline),
                              "bare qemu, one line", 1.3))
        for name, runs in (("rkt run", splits), ("bare qemu", bare_splits)):
            median_split = {k: round(statistics.median(s[k] for s in runs), 3) for k in runs[0]}
            print(f"split of {name} (median, s): "
                  + ", ".join(f"{k} {v:.3f}" for k, v in median_split.items()))
            results.append({"name": f"kvm start-up split, {name}", "accelerator": accel.name,
                            "split_s": median_split})
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return results


if __name__ == "__main__":
    run_and_save(main)
