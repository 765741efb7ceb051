"""Write a day of recorded predictions of the simulated production line as JSON lines, for `selector replay`.

    .venv/bin/python examples/make_predictions.py > examples/predictions.jsonl
    .venv/bin/selector replay -c config.yaml --input examples/predictions.jsonl --report report.html

Each line is a prediction of the input contract (``id``, ``probs`` over the classes of config.yaml, ``ts``,
``model``, ``segment``) plus ``label``, the true class, which the replay uses to measure how well the budget
catches defects (about 1% of items). Items arrive over 24 hours, three times as often during the day shift
as at night. A few lines are broken on purpose (cut off, not normalized, no id) to show how invalid input
is counted. The same arguments write the same bytes.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime

import numpy as np
import orjson

from connectors.demo.simulate import simulate_probs

CLASSES = ["ok", "scratch", "dent", "crack"]
START = datetime(2024, 5, 6, tzinfo=UTC).timestamp()
BROKEN = {
    1234: b'{"id": "broken-1", "probs": [0.5, 0.5',
    5678: b'{"id": "broken-2", "probs": [0.7, 0.7, 0.1, 0.1]}',
    9012: b'{"probs": [0.97, 0.01, 0.01, 0.01]}',
}


def arrival_times(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` sorted times over one day (s), with an arrival rate three times higher from 06:00 to 22:00."""
    hours = rng.choice(24, size=n, p=_hour_weights())
    return np.sort(START + hours * 3600.0 + rng.random(n) * 3600.0)


def _hour_weights() -> np.ndarray:
    w = np.array([3.0 if 6 <= h < 22 else 1.0 for h in range(24)])
    return w / w.sum()


def lines(n: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    truth, probs = simulate_probs(rng, n, len(CLASSES))
    probs = np.round(probs, 6)
    ts = arrival_times(rng, n)
    camera = rng.integers(0, 3, size=n)
    out = bytearray()
    for i in range(n):
        if i in BROKEN:
            out += BROKEN[i] + b"\n"
            continue
        stamp = datetime.fromtimestamp(ts[i], UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        record = {
            "id": f"item-{i:06d}",
            "probs": probs[i].tolist(),
            "ts": stamp,
            "model": "line-model-v1",
            "segment": f"camera-{camera[i]}",
            "label": CLASSES[truth[i]],
        }
        out += orjson.dumps(record) + b"\n"
    return bytes(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-n", type=int, default=20_000, help="number of lines (default 20000)")
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args()
    sys.stdout.buffer.write(lines(args.n, args.seed))


if __name__ == "__main__":
    main()
