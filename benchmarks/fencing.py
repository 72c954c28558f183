"""What fencing costs one worker: its end-to-end throughput with epochs and fences, and without them
(`MONITOR_FAULT=no-fencing`, every owner in epoch 0), alternated on the same records.

    scripts/kafka-up.sh
    python benchmarks/fencing.py [--decisions 300000] [--pairs 3]

Each run is a fresh group of one worker reading every record (benchmarks/stream.py's timing: from the first
record counted to the last decision merged). Prints each pair and the median ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.stream import Topics, workers
from monitor.infra.connection import connect


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", default=None)
    parser.add_argument("--decisions", type=int, default=300_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--pairs", type=int, default=3)
    args = parser.parse_args()
    servers = connect(args.bootstrap).bootstrap
    pairs = []
    with tempfile.TemporaryDirectory() as tmp:
        topics = Topics(servers, args.decisions, args.partitions, Path(tmp), 20_000 * 86_400)
        for run in range(args.pairs):
            os.environ.pop("MONITOR_FAULT", None)  # the workers inherit this environment
            fenced = workers(topics, 1, 2 * run)[0]
            os.environ["MONITOR_FAULT"] = "no-fencing"
            bare = workers(topics, 1, 2 * run + 1)[0]
            os.environ.pop("MONITOR_FAULT", None)
            pairs.append((fenced, bare))
            print(f"pair {run + 1}: fenced {fenced:,.0f}, without fencing {bare:,.0f} decisions/s"
                  f" ({fenced / bare:.1%})", flush=True)
    print(f"median: fenced {statistics.median(f for f, _ in pairs):,.0f}, without"
          f" {statistics.median(b for _, b in pairs):,.0f}; median ratio"
          f" {statistics.median(f / b for f, b in pairs):.1%}")


if __name__ == "__main__":
    main()
