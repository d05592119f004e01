"""Classify digits with an infinitely wide network, trained for a chosen time or to
convergence, without training anything: ntkdsl.NTKClassifier in a scikit-learn pipeline.

    python examples/classification.py
"""
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ntkdsl import NTKClassifier

ARCH = "(Dense(512, W_std=1.5, b_std=0.05) > Relu) * 2 > Dense(1, W_std=1.5, b_std=0.05)"


def main() -> None:
    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=0,
                                                        stratify=y)
    for time in [10.0, 1000.0, None]:  # None: trained to convergence (t = ∞)
        model = make_pipeline(StandardScaler(), NTKClassifier(ARCH, time=time, diag_reg=1e-4))
        model.fit(x_train, y_train)
        label = "inf" if time is None else f"{time:g}"
        print(f"t = {label:>5}: test accuracy {model.score(x_test, y_test):.3f}")

    # Class scores (one-hot MSE regression, Arora et al. 2020) for three test digits.
    scores = model.decision_function(x_test[:3])
    np.set_printoptions(precision=2, suppress=True)
    print("scores of the first three test digits:\n", scores)
    print("predicted", model.predict(x_test[:3]), "true", y_test[:3])


if __name__ == "__main__":
    main()
