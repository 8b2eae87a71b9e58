"""scikit-learn's RandomizedSearchCV over the space of Ray's SVM tutorial (C, gamma, tol
log-uniform over 12, 16 and 3 decades, class_weight none or balanced), n_iter=300,
5-fold stratified CV, two processes: the figure to put beside
`cargo run --release --example tune_svm_digits -- --n-iter 300 --wide`.

    pip install scikit-learn scipy && python3 benches/scripts/svm_search_wide_sklearn.py
"""
import time

from scipy.stats import loguniform
from sklearn.datasets import load_digits
from sklearn.model_selection import RandomizedSearchCV
from sklearn.svm import SVC

X, y = load_digits(return_X_y=True)
space = {
    "C": loguniform(1e-6, 1e6),
    "gamma": loguniform(1e-8, 1e8),
    "tol": loguniform(1e-4, 1e-1),
    "class_weight": [None, "balanced"],
}
search = RandomizedSearchCV(SVC(kernel="rbf"), space, n_iter=300, cv=5, random_state=0, n_jobs=2)
t = time.perf_counter()
search.fit(X, y)
print(f"wall {time.perf_counter() - t:.2f} s, best {search.best_score_:.4f}, {search.best_params_}")
