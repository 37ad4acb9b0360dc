"""Turns the no-op jobs' records of one contender into one Markdown table row.

    python3 analyse.py --system S --backend B --jobs N --mode backlog|concurrent \
        --dir OUT --enqueue ENQUEUE_JSON --spawned T [--notes TEXT]

Records are the lines `<job number> <enqueued at> <started at> <finished at>` in OUT/*.txt.
- backlog: throughput = jobs / (last job finished - first job started); the workers started
  after everything was enqueued, and their boot time is left out (it is in the notes).
- concurrent: throughput = jobs / (last job finished - enqueue started), like `docket bench queue`.
Enqueue-to-start latency is started - enqueued per job; p50/p99 by nearest rank, as Docket's bench.
Jobs that ran more than once or never are counted in the notes.
"""

import argparse
import glob
import json
import os


def percentile(values, p):
    return values[round((len(values) - 1) * p)] if values else 0.0


def main():
    parser = argparse.ArgumentParser()
    for name in ("--system", "--backend", "--mode", "--dir", "--enqueue"):
        parser.add_argument(name, required=True)
    parser.add_argument("--jobs", type=int, required=True)
    parser.add_argument("--spawned", type=float, required=True)
    parser.add_argument("--notes", default="")
    args = parser.parse_args()

    with open(args.enqueue) as f:
        enqueue = json.load(f)
    seen, delays, first_start, last_end = set(), [], None, None
    repeats = 0
    for path in glob.glob(os.path.join(args.dir, "*.txt")):
        with open(path) as f:
            for line in f:
                index, enqueued, started, finished = line.split()
                started, finished = float(started), float(finished)
                if index in seen:
                    repeats += 1
                    continue
                seen.add(index)
                delays.append((started - float(enqueued)) * 1000)
                first_start = started if first_start is None else min(first_start, started)
                last_end = finished if last_end is None else max(last_end, finished)
    delays.sort()

    enqueue_seconds = enqueue["enqueue_finished"] - enqueue["enqueue_started"]
    begin = first_start if args.mode == "backlog" else enqueue["enqueue_started"]
    seconds = (last_end - begin) if last_end is not None else 0
    notes = [f"{args.mode}"]
    if args.mode == "backlog" and first_start is not None:
        notes.append(f"first job {first_start - args.spawned:.1f} s after worker spawn")
    notes.append(f"{seconds:.1f} s")
    missing = args.jobs - len(seen)
    if missing:
        notes.append(f"**{missing} jobs never ran**")
    if repeats:
        notes.append(f"**{repeats} repeated executions**")
    if args.notes:
        notes.append(args.notes)
    throughput = len(seen) / seconds if seconds > 0 else 0
    print(
        f"| {args.system} | {args.backend} | {args.jobs} | {enqueue_seconds:.2f} | {throughput:.0f} | "
        f"{percentile(delays, 0.5):.0f} ms | {percentile(delays, 0.99):.0f} ms | {'; '.join(notes)} |"
    )


if __name__ == "__main__":
    main()
