"""How far a linear model can go on bugflow's split: an upper bound, not a result.

Reads the file `bugflow train NAME --export FILE` wrote (one labelled record a line: key,
id, part, label, title, body) and, for three linear learners users pick for short texts,
prints the test macro F1 at every value of C in a grid:

    LogisticRegression (balanced), TF-IDF word 1-2-grams + char_wb 2-5-grams of the title
    LinearSVC (balanced), the same features
    NB-LR (Wang and Manning's NBSVM with a logistic loss): binary counts scaled by each
      class's log-count ratio, one balanced LogisticRegression a class, the highest
      decision wins

The best of each row is chosen on test itself, so it is what the learner could reach with
a perfect choice of C: an optimistic ceiling, never a number to report as a model's score.
If even this is below a target, no choice of C made honestly (on the training part) reaches
it with that learner and these features.

Usage: python sklearn_ceiling.py EXPORT.jsonl [--title-weight W] [--min-df N]
"""

import argparse
import json

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.preprocessing import normalize
from sklearn.svm import LinearSVC


def nb_lr(train, y_train, test, classes, c):
    """One logistic regression a class on features scaled by its log-count ratio."""
    decisions = []
    for label in classes:
        y = (y_train == label).astype(int)
        p = 1 + train[y == 1].sum(0)
        q = 1 + train[y == 0].sum(0)
        r = np.asarray(np.log((p / p.sum()) / (q / q.sum()))).ravel()
        model = LogisticRegression(C=c, class_weight="balanced", max_iter=3000)
        model.fit(normalize(train.multiply(r).tocsr()), y)
        decisions.append(model.decision_function(normalize(test.multiply(r).tocsr())))
    return classes[np.argmax(np.vstack(decisions), 0)]


def main():
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("export")
    args.add_argument("--title-weight", type=float, default=1.0)
    args.add_argument("--min-df", type=int, default=1, help="for the character n-grams")
    args = args.parse_args()

    rows = [json.loads(line) for line in open(args.export) if line.strip()]
    train = [r for r in rows if r["part"] == "train"]
    test = [r for r in rows if r["part"] == "test"]
    y_train = np.array([r["label"] for r in train])
    y_test = np.array([r["label"] for r in test])
    titles = lambda records: [r["title"] or "" for r in records]
    classes = np.unique(y_train)
    f1 = lambda predicted: f1_score(y_test, predicted, average="macro")
    print(f"{args.export}: {len(train)} train, {len(test)} test, {len(classes)} classes")

    words = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    chars = TfidfVectorizer(
        analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=args.min_df
    )
    x_train = sp.hstack(
        [args.title_weight * words.fit_transform(titles(train)), chars.fit_transform(titles(train))]
    ).tocsr()
    x_test = sp.hstack(
        [args.title_weight * words.transform(titles(test)), chars.transform(titles(test))]
    ).tocsr()
    binary_words = CountVectorizer(ngram_range=(1, 2), binary=True)
    binary_chars = CountVectorizer(
        analyzer="char_wb", ngram_range=(2, 5), binary=True, min_df=args.min_df
    )
    b_train = sp.hstack(
        [binary_words.fit_transform(titles(train)), binary_chars.fit_transform(titles(train))]
    ).tocsr()
    b_test = sp.hstack(
        [binary_words.transform(titles(test)), binary_chars.transform(titles(test))]
    ).tocsr()

    learners = [
        (
            "LogisticRegression",
            [0.06, 0.125, 0.25, 0.5, 1, 2, 4, 8],
            lambda c: LogisticRegression(C=c, class_weight="balanced", max_iter=3000)
            .fit(x_train, y_train)
            .predict(x_test),
        ),
        (
            "LinearSVC",
            [0.03, 0.06, 0.125, 0.25, 0.5, 1],
            lambda c: LinearSVC(C=c, class_weight="balanced").fit(x_train, y_train).predict(x_test),
        ),
        ("NB-LR", [0.1, 0.3, 1, 3, 10], lambda c: nb_lr(b_train, y_train, b_test, classes, c)),
    ]
    print(f"| learner | test macro F1 at each C | best (C chosen on test) |")
    print("|---|---|---:|")
    for name, grid, predict in learners:
        scores = [(c, f1(predict(c))) for c in grid]
        cells = ", ".join(f"{c}: {score:.3f}" for c, score in scores)
        best = max(scores, key=lambda s: s[1])
        print(f"| {name} | {cells} | {best[1]:.3f} (C {best[0]}) |", flush=True)


if __name__ == "__main__":
    main()
