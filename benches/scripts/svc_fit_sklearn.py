"""scikit-learn's SVC on the digits, fold by fold (StratifiedKFold(5)): the fit time and
accuracy to put beside `cargo run --release -p prism-tune --example svc_digits`, which
prints the same lines for prism-tune's SVC on the same folds.

    pip install scikit-learn && python3 benches/scripts/svc_fit_sklearn.py
"""
import time

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import StratifiedKFold
from sklearn.svm import SVC

X, y = load_digits(return_X_y=True)
for C, gamma in [(10.0, 0.001), (1.0, 0.001), (100.0, 0.0001), (1000.0, 1e-5)]:
    times, accs, svs = [], [], 0
    for train, test in StratifiedKFold(5).split(X, y):
        model = SVC(C=C, gamma=gamma)
        t = time.perf_counter()
        model.fit(X[train], y[train])
        times.append(time.perf_counter() - t)
        accs.append(model.score(X[test], y[test]))
        svs = int(model.n_support_.sum())
    print(f"C={C:g} gamma={gamma:g}: fit median {np.median(times):.4f} s, "
          f"mean accuracy {np.mean(accs):.4f}, {svs} support vectors (last fold)")
