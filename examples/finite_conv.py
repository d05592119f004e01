"""Finite convolutional networks settle on one kernel as their channels grow.

A convolutional network with weight sharing, written as a string, built at several widths
(width = the channels of every hidden Conv), on a dozen 8x8 digits from scikit-learn:

1. the empirical NTK and the Monte-Carlo NNGP of independently initialised networks
   disagree with each other by a relative amount that falls like width^(-1/2): the random
   part of a finite network vanishes, leaving one deterministic kernel — the infinite-width
   CNTK and CNN-GP. (With a few networks per width the numbers are noisy: the slope over
   the widths is what to read.)
2. the network itself: its parameters (the filters shared by every position), its outputs
   and an entry of its NTK.

``ntkdsl verify ARCH --shape 8,8,1`` measures the same against the analytic kernels.

Run:  python examples/finite_conv.py       (10-20 seconds)
"""
import numpy as np
from sklearn.datasets import load_digits

from ntkdsl.finite import FiniteNetwork, empirical_ntk, monte_carlo_nngp

ARCH = ("Conv(64, (3, 3), padding='SAME', W_std=1.4, b_std=0.1) > Erf > "
        "AvgPool((2, 2), strides=(2, 2)) > "
        "Conv(64, (3, 3), padding='SAME', W_std=1.4, b_std=0.1) > Erf > Flatten > "
        "Dense(1, W_std=1.4)")
WIDTHS = (8, 32, 128, 512)
SEEDS = 4

# Twelve digits as images, channels last: (12, 8, 8, 1), scaled to unit mean square.
digits = load_digits()
x = digits.images[:12, :, :, None] / 16.0
x /= np.sqrt(np.mean(x ** 2, axis=(1, 2, 3), keepdims=True))


def spread(kernels):
    """Mean relative distance of each kernel from their average."""
    mean = np.mean(kernels, axis=0)
    return np.mean([np.linalg.norm(k - mean) / np.linalg.norm(mean) for k in kernels])


print(f"architecture: {ARCH}")
print(f"inputs: {x.shape} (digits as 8x8 single-channel images)\n")
print(" width   NTK spread   NNGP spread")
ntk_spreads, nngp_spreads = [], []
for width in WIDTHS:
    ntk_spread = spread([empirical_ntk(ARCH, x, width=width, seed=s) for s in range(SEEDS)])
    nngp_spread = spread([monte_carlo_nngp(ARCH, x, width=width, samples=8, seed=s)
                          for s in range(SEEDS)])
    ntk_spreads.append(ntk_spread)
    nngp_spreads.append(nngp_spread)
    print(f"{width:6d}   {ntk_spread:10.4f}   {nngp_spread:11.4f}")
logs = np.log(WIDTHS)
print(f" slope   {np.polyfit(logs, np.log(ntk_spreads), 1)[0]:10.2f}   "
      f"{np.polyfit(logs, np.log(nngp_spreads), 1)[0]:11.2f}   (about -0.5 expected)")

net = FiniteNetwork(ARCH, input_shape=(8, 8, 1), width=32)
params = net.init(seed=0)
print(f"\nthe network at width 32: {net.arch}")
print(f"  {net.num_params} parameters in arrays of shapes {[p.shape[1:] for p in params]}")
print(f"  outputs f(x): {net.apply(params, x).shape} (networks, inputs, outputs)")
print(f"  NTK entry (0, 1): {net.ntk(params, x[:2])[0, 0, 1]:.4f}")
