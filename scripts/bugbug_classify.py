"""Times Python bugbug's `Model.classify` per bug, as its HTTP service calls it.

Run in a folder holding a trained `regressionmodel` (bugbug-train regression); reads the
bugs of BUGS.jsonl (BMO REST JSON Lines, `.zst` decompressed first by the caller).
Prints one line: batch per-bug µs (median of 5 runs over all bugs), single-bug call µs
(median of 20), max RSS.

Usage: python bugbug_classify.py BUGS.jsonl
"""

import json
import resource
import statistics
import sys
import time
import warnings

warnings.filterwarnings("ignore")

from bugbug.model import Model  # noqa: E402


def main(path):
    bugs = [json.loads(line) for line in open(path) if line.strip()]
    for bug in bugs:
        # Bugs exported before BMO had these fields lack them; bugbug's features index them.
        for field in ("regressed_by", "regressions", "depends_on", "blocks", "keywords"):
            bug.setdefault(field, [])
    model = Model.load("regressionmodel")
    model.classify(bugs[:2], probabilities=True)  # warm
    batch = []
    for _ in range(5):
        started = time.perf_counter()
        model.classify(bugs, probabilities=True)
        batch.append((time.perf_counter() - started) / len(bugs) * 1e6)
    single = []
    for bug in bugs[:20]:
        started = time.perf_counter()
        model.classify([bug], probabilities=True)
        single.append((time.perf_counter() - started) * 1e6)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    print(f"| bugbug regression, {len(bugs)} bugs | batch {statistics.median(batch):.0f} µs per bug "
          f"(min {min(batch):.0f}) | single-bug call {statistics.median(single):.0f} µs | max RSS {rss} MB |")


if __name__ == "__main__":
    main(sys.argv[1])
