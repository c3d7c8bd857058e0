"""The seed study: what seeds.json records, on a tiny budget."""

from __future__ import annotations

import statistics

from segkit import recipe
from segkit.config import LEVERS
from segkit.study import seed_study


def test_seed_study_records_runs_spread_and_levers(synthetic_root, tmp_path):
    tiny = dict(limit_train=4, limit_val=2, batch_size=2, warmup_steps=0, num_threads=1)
    rows = seed_study(("baseconv",), (0, 1), 1, data_dir=str(synthetic_root),
                      out_dir=str(tmp_path), device="cpu", **tiny)  # fmt: skip
    (entry,) = rows
    aps = [r["mean_ap"] for r in entry["runs"]]
    assert [r["seed"] for r in entry["runs"]] == [0, 1]
    assert entry["spread"] == max(aps) - min(aps)
    assert entry["std"] == statistics.stdev(aps)
    # the levers the runs trained with (today's recipe), so the report can name them
    assert entry["levers"] == {k: getattr(recipe("baseconv"), k) for k in LEVERS}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seed_baseconv_0", "seed_baseconv_1"]
