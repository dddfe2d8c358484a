"""One scikit-learn fit against bugflow's whole `train issue-type`, same split, same machine.

    target/release/bugflow train issue-type --out /tmp/it/models --export /tmp/it/export.jsonl
    target/compare-venv/bin/python scripts/time_sklearn_fit.py /tmp/it/export.jsonl

(`scripts/compare-sklearn` creates the venv.) Times vectorising and one LogisticRegression
fit (balanced, lbfgs) of two pipelines on the exported training part, pooled over the five
repositories as bugflow's model is, and scores the test part:

* words: TF-IDF word 1–2-grams of title and of body (sublinear tf), the pipeline the issue
  timed at 2.9 s;
* bugflow's features: the same, plus char_wb 2–5-grams of "title title body" (first 1,500
  characters), as `features::issue` reads them.

bugflow's own time is the bundle manifest's `train_seconds`: reading, features, two values
of C fitted on a held slice, the refit, calibration, metrics and report.
"""

import json
import sys
import time

from scipy.sparse import hstack
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score


def columns(records, chars):
    titles = [r["title"] or "" for r in records]
    bodies = [r["body"] or "" for r in records]
    out = [titles, bodies]
    if chars:
        out.append([(t + " " + t + " " + b)[:1500] for t, b in zip(titles, bodies)])
    return out


def vectorisers(chars):
    words = [TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True) for _ in range(2)]
    if chars:
        words.append(TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True))
    return words


def main(export):
    rows = [json.loads(line) for line in open(export) if line.strip()]
    train = [r for r in rows if r["part"] == "train"]
    test = [r for r in rows if r["part"] == "test"]
    for name, chars in (("words", False), ("bugflow's features", True)):
        for c in (2.0, 8.0):
            started = time.time()
            vs = vectorisers(chars)
            x = hstack([v.fit_transform(col) for v, col in zip(vs, columns(train, chars))]).tocsr()
            lr = LogisticRegression(C=c, class_weight="balanced", max_iter=2000)
            lr.fit(x, [r["label"] for r in train])
            seconds = time.time() - started
            x_test = hstack([v.transform(col) for v, col in zip(vs, columns(test, chars))]).tocsr()
            f1 = f1_score([r["label"] for r in test], lr.predict(x_test), average="macro")
            print(f"{name:<20} C={c:<4} {seconds:6.2f} s  {x.shape[0]} x {x.shape[1]}  "
                  f"test macro F1 {f1:.3f} ({len(test)} records)")


if __name__ == "__main__":
    main(sys.argv[1])
