"""`make demo`: PAS end to end on the bundled default and a printed result table.

With the bundled Fashion-MNIST model present it runs the quick preset of train_tools.reproduction.reproduce
(real images, FID when the Inception weights are installed); otherwise the analytic Gaussian mixture.
"""
from __future__ import annotations

import argparse
import os
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", choices=["auto", "fashion", "gmm"], default="auto")
    args, rest = parser.parse_known_args(argv)
    from demo_model import DEFAULT_WEIGHTS

    use_fashion = args.model == "fashion" or (args.model == "auto" and DEFAULT_WEIGHTS.is_file())
    if use_fashion:
        from train_tools.reproduction import reproduce

        return reproduce.main(["--preset", "quick", *rest])
    from train_tools.benches import bench_gmm

    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun the mixture bench runs on one process
        return None
    print("Bundled model not found: running the Gaussian-mixture demo.", file=sys.stderr)
    return bench_gmm.main(["--nfe", "5", "10", "--eval", "256", "--out", "out/demo_gmm.json", *rest])


if __name__ == "__main__":
    main()
