# ruff: noqa: F821 (Snakemake injects `snakemake` into rule scripts)
"""Log the signals and SLURM facts a rule's process sees; see Snakefile."""

import os
import signal
import subprocess
import sys
import time

case, attempt, out = snakemake.wildcards.case, snakemake.resources.attempt, snakemake.output[0]
log = open(f"probe/{case}.attempt{attempt}.log", "a", buffering=1)


def p(*args):
    print(time.strftime("%T"), *args, file=log)


def chain(pid):
    names = []
    while pid > 1:
        try:
            comm = open(f"/proc/{pid}/comm").read().strip()
            ppid = int(open(f"/proc/{pid}/stat").read().rsplit(") ", 1)[1].split()[1])
        except OSError:
            break
        names.append(f"{pid}:{comm}")
        pid = ppid
    return " <- ".join(names)


p("python", sys.executable, "| PATH[0]", os.environ.get("PATH", "").split(":")[0])
p("SLURM_JOB_ID", os.environ.get("SLURM_JOB_ID"), "| SLURM_JOB_END_TIME", os.environ.get("SLURM_JOB_END_TIME"))
p("SLURM_CONF", os.environ.get("SLURM_CONF"))
job = os.environ.get("SLURM_JOB_ID")
if job:
    squeue = subprocess.run(["squeue", "-h", "-j", job, "-o", "%e %L"], capture_output=True, text=True)
    p("squeue -o '%e %L':", squeue.stdout.strip(), squeue.stderr.strip())
p("process chain:", chain(os.getpid()))
got = []


def handler(signum, _frame):
    got.append(signum)
    p("GOT", signal.Signals(signum).name, "| chain:", chain(os.getpid()))


for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT, signal.SIGHUP, signal.SIGCONT):
    signal.signal(sig, handler)
if attempt >= 2:
    open(out, "w").write(f"attempt {attempt}\n")
    p("attempt", attempt, "done")
    sys.exit(0)
start = time.time()
while time.time() - start < 170:
    time.sleep(0.5)
    if any(s != signal.SIGCONT for s in got):
        p("saving a checkpoint (3 s)")
        time.sleep(3)
        p("saved; chain:", chain(os.getpid()), "; exit 75")
        sys.exit(75)
p("no signal in 170 s; exit 1")
sys.exit(1)
