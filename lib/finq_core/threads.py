"""One BLAS/OpenMP thread per process, set before NumPy loads: many processes share few cores.

deploy/finq-service exports these for every service (`python -m finq_core.threads` prints
them); the benchmarks that run the engine in-process call `cap_threads()` first.
"""

import os

THREAD_CAPS = {
    name: "1"
    for name in (
        "OMP_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "MKL_NUM_THREADS",
        "NUMEXPR_NUM_THREADS",
        "VECLIB_MAXIMUM_THREADS",
    )
}


def cap_threads() -> None:
    os.environ.update(THREAD_CAPS)


if __name__ == "__main__":
    print("export", *(f"{name}={value}" for name, value in THREAD_CAPS.items()))
