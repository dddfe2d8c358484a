"""scikit-learn on exactly the split bugflow trained on, side by side.

Reads the file `bugflow train NAME --export FILE` wrote (one labelled record a line: key,
id, part, label, title, body) and the bundle's manifest.json; for each key (a repository
for issue-type, "" otherwise) fits the pipeline users would pick instead:

    TF-IDF (word 1-2-grams, sublinear tf) on the title and on the body, separately
    + LogisticRegression (class_weight="balanced", C by 3-fold cross-validation on the
      training part over 0.1 … 100, scored by macro F1)

and prints its test macro F1 beside bugflow's, per key and on average (as the per-repository
benchmark reports it).

Usage: python compare_sklearn.py EXPORT.jsonl MANIFEST.json
"""

import json
import sys
import time
from collections import defaultdict

from sklearn.compose import ColumnTransformer
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import Pipeline


def pipeline(columns):
    """The pipeline over the text `columns` (a column no training record has text in, such
    as a commit's body, is left out: it would have no vocabulary)."""
    text = dict(ngram_range=(1, 2), sublinear_tf=True, min_df=1)
    union = ColumnTransformer([(c, TfidfVectorizer(**text), c) for c in columns])
    lr = LogisticRegression(class_weight="balanced", max_iter=2000)
    return GridSearchCV(
        Pipeline([("union", union), ("lr", lr)]),
        {"lr__C": [0.1, 0.3, 1, 3, 10, 30, 100]},
        scoring="f1_macro",
        cv=StratifiedKFold(3, shuffle=True, random_state=0),
        n_jobs=1,
    )


def main(export, manifest):
    import pandas as pd

    rows = [json.loads(line) for line in open(export) if line.strip()]
    bundle = json.load(open(manifest))
    ours = bundle.get("per_repository") or {"": bundle["metrics"]}
    by_key = defaultdict(list)
    for r in rows:
        by_key[r["key"]].append(r)
    print(f"{bundle['model']}: {len(rows)} records, split {bundle['split']['strategy']} "
          f"by {bundle['split'].get('by', '?')}, test fraction {bundle['split']['test_fraction']}")
    print(f"  {'key':<28} {'train':>6} {'test':>6} {'sklearn F1':>11} {'bugflow F1':>11}  sklearn C, fit s")
    theirs_all, ours_all = [], []
    for key, records in sorted(by_key.items()):
        df = pd.DataFrame(records)
        df["title"] = df["title"].fillna("")
        df["body"] = df["body"].fillna("")
        train, test = df[df.part == "train"], df[df.part == "test"]
        started = time.time()
        columns = [c for c in ("title", "body") if train[c].str.strip().any()]
        model = pipeline(columns).fit(train[columns], train["label"])
        seconds = time.time() - started
        f1 = f1_score(test["label"], model.predict(test[columns]), average="macro")
        mine = ours[key]["macro_f1"]
        theirs_all.append(f1)
        ours_all.append(mine)
        print(f"  {key or '(one model)':<28} {len(train):>6} {len(test):>6} {f1:>11.3f} {mine:>11.3f}  "
              f"{model.best_params_['lr__C']}, {seconds:.1f}")
    n = len(theirs_all)
    print(f"  {'mean':<28} {'':>6} {'':>6} {sum(theirs_all) / n:>11.3f} {sum(ours_all) / n:>11.3f}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
