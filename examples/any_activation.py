"""Any activation: built-ins without closed forms, your own expression with Fn, and which
route each one took (closed form by rules, or the numerical Hermite series with its bound).

    python examples/any_activation.py
"""
import numpy as np

import ntkdsl

x = np.random.default_rng(0).standard_normal((5, 8))

for arch in ["Dense(512, W_std=1.5, b_std=0.1) > Tanh > Dense(1)",
             'Dense(512) > Fn("sin(x) + 0.5*x") > Dense(1)',     # closed form by rules
             'Dense(512) > Fn("x*tanh(x)") > Dense(1)',           # numerical route
             "Dense(512) > Relu > Sin > Dense(1)"]:               # a composition
    net = ntkdsl.compile(arch)
    print(net.formula("ntk"))
    print("NTK row 0:", np.round(net.ntk(x)[0], 6), "\n")

try:
    ntkdsl.compile('Dense(512) > Fn("exp(x**2)") > Dense(1)')
except ntkdsl.ExpressionError as err:
    print(err)
