"""Classify digits as 8x8 images with convolutional kernels (CNTK and CNN-GP): the same
NTKClassifier, a Conv architecture and input_shape=(8, 8, 1), beside the fully-connected NTK.

    python examples/conv_classification.py

scikit-learn keeps its 2-D contract: each row of 64 pixels is reshaped to an 8x8x1 image
(channels last) for the kernels. Images (n, 8, 8, 1) may be given directly instead.

600 training digits keep it quick. The Flatten network here is the cheap one (64
same-position covariances per pair of images); with pooling the kernels cost 4,096 position
pairs per pair of images at 8x8 and do better — benchmarks/compare_models.py has both on the
full split.
"""
import time

from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from ntkdsl import NTKClassifier

# A Flatten readout: only same-position covariances (64 per pair of images), the cheap path.
CONV = "(Conv(32, (3, 3), padding='SAME', W_std=1.4, b_std=0.1) > Relu) * 3 > Flatten > Dense(1)"
TRAIN = 600
DENSE = "(Dense(512, W_std=1.5, b_std=0.05) > Relu) * 2 > Dense(1, W_std=1.5, b_std=0.05)"


def main() -> None:
    x, y = load_digits(return_X_y=True)
    x = x / 16.0  # pixels in [0, 1]: one scale for every position, as a convolution expects
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=0,
                                                        stratify=y)
    x_train, y_train = x_train[:TRAIN], y_train[:TRAIN]
    models = {
        "CNTK   (conv NTK), rows as images": NTKClassifier(CONV, input_shape=(8, 8, 1),
                                                           diag_reg=1e-4),
        "dense NTK, the same 64 pixels": NTKClassifier(DENSE, diag_reg=1e-4),
    }
    for name, model in models.items():
        tic = time.perf_counter()
        model.fit(x_train, y_train)
        accuracy = model.score(x_test, y_test)
        print(f"{name:36s} test accuracy {accuracy:.3f}  ({time.perf_counter() - tic:.1f} s)")

    # The CNN-GP (Bayesian posterior of the NNGP), given images directly: (n, 8, 8, 1).
    images_train, images_test = x_train.reshape(-1, 8, 8, 1), x_test.reshape(-1, 8, 8, 1)
    cnn_gp = NTKClassifier(CONV, kernel="nngp", diag_reg=1e-4).fit(images_train, y_train)
    print(f"{'CNN-GP (conv NNGP), images':36s} test accuracy "
          f"{cnn_gp.score(images_test, y_test):.3f}  (input_shape_ = {cnn_gp.input_shape_})")


if __name__ == "__main__":
    main()
