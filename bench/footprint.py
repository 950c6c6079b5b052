"""Benchmark 3: memory of the daemon through a training cycle, and model time against size.

    python -m bench.footprint [--daemon-tasks 10000] [--sizes 1000 10000 50000] [--repetitions 3]

Part 1, the daemon process. A project of 10,000 fine-food reviews with 100 labels; each
repetition runs `python -m aldaemon --config X once` as a subprocess with a fresh state
directory, so that it reads every task, trains, scores 9,900 tasks and uploads them. Its
memory is read three ways:
- per process peak (VmHWM from /proc, sampled every 50 ms until the process is gone),
  for the daemon and for its model worker child (a spawned process);
- the sampled peak of the SUM of RSS over the whole process tree: what the machine must
  hold at once, since the daemon and its worker are alive together.
`getrusage(RUSAGE_CHILDREN)` / `wait4` ru_maxrss are NOT used: Linux carries the parent's
RSS high-water mark through fork and exec into the child's figure, so they report at
least this benchmark's own RSS (219 MiB, for a `check-config` whose VmHWM is 29 MiB).
The reference, measured the same way in the same run: `python -m aldaemon check-config`
(the interpreter with the daemon's imports, no work).

Part 2, the model alone. `train_and_save` and `score_pool` (the worker's two jobs) timed
directly for projects of 1k, 10k and 50k tasks, each measurement in a fresh spawned
process (as the worker is) whose peak RSS is read too. Two labeling stages per size:
500 labels (early in a project's life) and 10 % of the tasks; the rest is the pool that
is scored. Times are also given as ratios against the 1,000-task time of the same run.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import common
from tests.lsserver import LabelStudioClient

NAME = "footprint"
SAMPLE_INTERVAL = 0.05
DAEMON_LABELS = 100
FIXED_LABELS = 500
LABEL_SHARE = 0.10


# ---- part 1: the daemon process ----------------------------------------------------------


def process_tree(root: int) -> list[int]:
    """`root` and all its descendants, from /proc (children lists of every thread)."""
    found = [root]
    index = 0
    while index < len(found):
        pid = found[index]
        index += 1
        for task_dir in Path(f"/proc/{pid}/task").glob("*"):
            try:
                children = (task_dir / "children").read_text().split()
            except OSError:
                continue
            found.extend(int(child) for child in children if int(child) not in found)
    return found


def memory_kib(pid: int) -> tuple[int, int, str] | None:
    """(VmRSS, VmHWM, command line) of a live process, in KiB; None once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    try:
        rss = int(fields["VmRSS"].split()[0])
        hwm = int(fields["VmHWM"].split()[0])
    except (KeyError, ValueError, IndexError):
        return None  # a zombie has no memory lines
    return rss, hwm, command


def role(command: str) -> str:
    if "multiprocessing.resource_tracker" in command:
        return "resource_tracker"
    if "multiprocessing" in command or "spawn_main" in command:
        return "model_worker"
    return "daemon"


def run_and_watch(command: Sequence[str], *, env: dict[str, str], output: Path) -> dict[str, Any]:
    """Run `command`, sampling its process tree's memory until it exits."""
    started = time.perf_counter()
    with output.open("wb") as sink:
        process = subprocess.Popen(list(command), env=env, stdout=sink, stderr=subprocess.STDOUT)
        peak_sum = 0
        peak_by_role: dict[str, int] = {}
        while True:
            tree_rss = 0
            for pid in process_tree(process.pid):
                sample = memory_kib(pid)
                if sample is None:
                    continue
                rss, hwm, cmdline = sample
                tree_rss += rss
                name = role(cmdline)
                peak_by_role[name] = max(peak_by_role.get(name, 0), hwm)
            peak_sum = max(peak_sum, tree_rss)
            # WNOWAIT: notice the exit without reaping, so the last samples stay readable.
            if os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT):
                break
            time.sleep(SAMPLE_INTERVAL)
        process.wait()
    return {
        "seconds": time.perf_counter() - started,
        "exit_code": process.returncode,
        "peak_rss_sum_mib": peak_sum / 1024,
        "peak_rss_by_process_mib": {k: v / 1024 for k, v in sorted(peak_by_role.items())},
        "output": output.read_text(errors="replace").strip().splitlines()[-5:],
    }


def measure_daemon(*, tasks: int, repetitions: int, work_dir: Path) -> dict[str, Any]:
    with common.label_studio(work_dir) as server:
        client = LabelStudioClient(server)
        bench_tasks = common.repeated_tasks(common.corpus(), tasks)
        project_id, by_task_id = common.create_project(
            client, title=f"footprint {tasks}", tasks=bench_tasks
        )
        for task_id in sorted(by_task_id)[:DAEMON_LABELS]:
            common.annotate(client, task_id, by_task_id[task_id].label)
        env = {k: v for k, v in os.environ.items() if not k.startswith("ALDAEMON_")}
        runs: list[dict[str, Any]] = []
        references: list[dict[str, Any]] = []
        for repetition in range(1, repetitions + 1):
            config = common.daemon_config(
                directory=work_dir / f"daemon-{repetition}",
                server=server,
                project_id=project_id,
                retrain={"min_new_annotations": 10},
            )
            base = [sys.executable, "-m", "aldaemon", "--config", config.path]
            references.append(
                run_and_watch(
                    [*base, "check-config"], env=env, output=work_dir / f"check-{repetition}.out"
                )
            )
            run = run_and_watch(
                [*base, "--log-level", "warning", "once"],
                env=env,
                output=work_dir / f"once-{repetition}.out",
            )
            if run["exit_code"] != 0 or not any("uploaded" in line for line in run["output"]):
                raise RuntimeError(f"`aldaemon once` did not publish: {run['output']}")
            runs.append(run)
            print(
                f"[daemon {tasks}] rep {repetition}: {run['seconds']:.1f} s, tree peak "
                f"{run['peak_rss_sum_mib']:.0f} MiB, by process "
                f"{ {k: round(v) for k, v in run['peak_rss_by_process_mib'].items()} }, "
                f"check-config {references[-1]['peak_rss_sum_mib']:.0f} MiB"
            )
        machine = common.machine_info(server)
    daemon_peaks = [r["peak_rss_by_process_mib"].get("daemon", 0.0) for r in runs]
    worker_peaks = [r["peak_rss_by_process_mib"].get("model_worker", 0.0) for r in runs]
    reference = common.median([r["peak_rss_sum_mib"] for r in references])
    return {
        "tasks": tasks,
        "labels": DAEMON_LABELS,
        "runs": runs,
        "check_config_runs": references,
        "median": {
            "tree_peak_rss_sum_mib": round(common.median([r["peak_rss_sum_mib"] for r in runs])),
            "daemon_peak_rss_mib": round(common.median(daemon_peaks)),
            "worker_peak_rss_mib": round(common.median(worker_peaks)),
            "check_config_rss_mib": round(reference),
            "tree_over_check_config": common.rounded(
                common.median([r["peak_rss_sum_mib"] for r in runs]) / reference, 2
            ),
            "once_seconds": common.rounded(common.median([r["seconds"] for r in runs]), 1),
        },
        "machine": machine,
    }


# ---- part 2: the model jobs alone ------------------------------------------------------


def own_peak_rss_kib() -> int:
    """This process's own RSS high-water mark (VmHWM), reset by exec, unlike ru_maxrss."""
    sample = memory_kib(os.getpid())
    return sample[1] if sample is not None else 0


def model_job(
    texts: list[str], labels: list[str], pool: list[str], artifact_path: str
) -> dict[str, float]:
    """In a fresh process: train, then score the pool; times and this process's peak RSS."""
    from aldaemon.model.protocol import DEFAULT_FACTORY as DEFAULT_MODEL
    from aldaemon.model.requests import SingleLabelTraining
    from aldaemon.model.training import score_pool, train_and_save

    started = time.perf_counter()
    train_and_save(
        SingleLabelTraining(
            factory_ref=DEFAULT_MODEL, texts=texts, labels=labels, artifact_path=artifact_path
        )
    )
    trained = time.perf_counter()
    score_pool(
        artifact_path=artifact_path,
        task_ids=list(range(len(pool))),
        texts=pool,
        strategy="margin",
    )
    scored = time.perf_counter()
    return {
        "train_s": trained - started,
        "score_s": scored - trained,
        # VmHWM, not ru_maxrss: the latter starts at the parent's high-water mark.
        "peak_rss_mib": own_peak_rss_kib() / 1024,
    }


def measure_model(*, sizes: Sequence[int], repetitions: int, work_dir: Path) -> dict[str, Any]:
    reviews = common.corpus()
    context = multiprocessing.get_context("spawn")
    rows: list[dict[str, Any]] = []
    for repetition in range(1, repetitions + 1):
        for size in sizes:
            tasks = common.repeated_tasks(reviews, size)
            for stage, labeled in (
                ("500 labels", FIXED_LABELS),
                ("10% labeled", int(size * LABEL_SHARE)),
            ):
                labeled = min(labeled, size - 1)
                train, pool = tasks[:labeled], tasks[labeled:]
                artifact = str(work_dir / f"model-{size}-{labeled}.joblib")
                with context.Pool(1, maxtasksperchild=1) as worker:
                    figures = worker.apply(
                        model_job,
                        (
                            [t.text for t in train],
                            [t.label for t in train],
                            [t.text for t in pool],
                            artifact,
                        ),
                    )
                rows.append(
                    {
                        "repetition": repetition,
                        "tasks": size,
                        "stage": stage,
                        "labels": labeled,
                        "pool": len(pool),
                        **figures,
                    }
                )
                print(
                    f"[model {size}, {stage}] rep {repetition}: train {figures['train_s']:.2f} s, "
                    f"score {figures['score_s']:.2f} s ({len(pool)} tasks), peak "
                    f"{figures['peak_rss_mib']:.0f} MiB"
                )
    return {"rows": rows, "summary": summarize_model(rows, smallest=min(sizes))}


def summarize_model(rows: Sequence[dict[str, Any]], *, smallest: int) -> list[dict[str, Any]]:
    """Medians per (stage, size), with time ratios against the smallest size of the same run.

    Each ratio is taken within one repetition (same minutes, same neighbours) and the
    median of those ratios is reported.
    """
    summary = []
    stages = sorted({r["stage"] for r in rows})
    sizes = sorted({r["tasks"] for r in rows})
    for stage in stages:
        for size in sizes:
            mine = [r for r in rows if r["stage"] == stage and r["tasks"] == size]
            ratios = []
            for row in mine:
                base = next(
                    r
                    for r in rows
                    if r["stage"] == stage
                    and r["tasks"] == smallest
                    and r["repetition"] == row["repetition"]
                )
                ratios.append(
                    (row["train_s"] + row["score_s"]) / (base["train_s"] + base["score_s"])
                )
            summary.append(
                {
                    "stage": stage,
                    "tasks": size,
                    "labels": mine[0]["labels"],
                    "pool": mine[0]["pool"],
                    "train_s": common.rounded(common.median([r["train_s"] for r in mine]), 2),
                    "score_s": common.rounded(common.median([r["score_s"] for r in mine]), 2),
                    "peak_rss_mib": round(common.median([r["peak_rss_mib"] for r in mine])),
                    "total_over_smallest": common.rounded(common.median(ratios), 2),
                }
            )
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.footprint", description=__doc__)
    parser.add_argument("--daemon-tasks", type=int, default=10000)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 50000])
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--skip-daemon", action="store_true")
    parser.add_argument("--skip-model", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    payload: dict[str, Any] = {}
    with common.work_directory(NAME, keep=args.keep) as work_dir:
        if not args.skip_model:
            payload["model"] = measure_model(
                sizes=args.sizes, repetitions=args.repetitions, work_dir=work_dir
            )
        if not args.skip_daemon:
            payload["daemon"] = measure_daemon(
                tasks=args.daemon_tasks, repetitions=args.repetitions, work_dir=work_dir
            )
    payload["machine"] = payload.get("daemon", {}).pop("machine", None) or common.machine_info(None)
    if "daemon" in payload:
        m = payload["daemon"]["median"]
        print(
            f"daemon `once` on {args.daemon_tasks} tasks: peak {m['tree_peak_rss_sum_mib']} MiB "
            f"(daemon {m['daemon_peak_rss_mib']} + worker {m['worker_peak_rss_mib']}), "
            f"{m['tree_over_check_config']} x check-config"
        )
    for row in payload.get("model", {}).get("summary", []):
        print(
            f"{row['stage']:>12} {row['tasks']:>6} tasks: train {row['train_s']} s, "
            f"score {row['score_s']} s, peak {row['peak_rss_mib']} MiB, "
            f"{row['total_over_smallest']} x the smallest size"
        )
    common.write_result(NAME, payload, module=f"bench.{NAME}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
