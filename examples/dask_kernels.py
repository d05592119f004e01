"""Kernels on Dask: the NTK of a row-chunked Dask array, computed block by block on a cluster.

The same code runs on a laptop's LocalCluster and on a real one: replace the LocalCluster by
``Client("tcp://scheduler:8786")`` (or a dask-jobqueue / Kubernetes cluster). Every worker
needs ntkdsl installed (``pip install 'ntkdsl[dask]'``).

    python examples/dask_kernels.py
"""
import os
import tempfile

import dask.array as da
import numpy as np
from distributed import Client, LocalCluster

import ntkdsl

if __name__ == "__main__":  # worker processes import this file too
    net = ntkdsl.compile("(Dense(512, W_std=1.4, b_std=0.1) > Relu) * 3 > Dense(1)")
    x = np.random.default_rng(0).normal(size=(3000, 20))
    X = da.from_array(x, chunks=(500, -1))  # rows in chunks, every row's features whole

    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0",
                      silence_logs=50) as cluster, Client(cluster):
        nngp, ntk = net.kernels(X)  # lazy: 21 block tasks (the upper triangle of 6 x 6)
        print(f"lazy NTK {ntk.shape}, chunks {ntk.chunksize}, "
              f"{len(dict(ntk.__dask_graph__()))} tasks in its graph")
        on_cluster = ntk.compute()
        print("cluster vs in-process, largest difference:",
              np.abs(on_cluster - net.ntk(x)).max())
        print("exactly symmetric:", np.array_equal(on_cluster, on_cluster.T))

        with tempfile.TemporaryDirectory() as tmp:  # larger than memory: workers write it
            path = ntkdsl.dask.to_npy(ntk, os.path.join(tmp, "ntk.npy"))
            stored = np.load(path, mmap_mode="r")
            print(f"{path.rsplit(os.sep, 1)[-1]}: {stored.shape}, row 0 equal:",
                  np.array_equal(stored[0], on_cluster[0]))
            del stored

        bad = x.copy()
        bad[1234, 5] = np.nan
        try:
            net.ntk(da.from_array(bad, chunks=(500, -1))).compute()
        except ntkdsl.InputError as err:
            print("error from a worker:", str(err).splitlines()[0])
