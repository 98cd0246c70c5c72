"""nodulejax.train.logger: metrics.jsonl (truncated on resume) and TensorBoard events."""

import json
import os

from nodulejax.train.logger import MetricLogger, truncate_jsonl


def test_jsonl_records_and_resume_truncation(tmp_path):
    d = str(tmp_path / "logs")
    log = MetricLogger(d, total_steps=4, progress=False, desc="t")
    for s in (1, 2, 3):
        log.write(s, {"loss": 1.0 / s}, "train")
    log.write(3, {"auc": 0.5}, "val")
    log.close()
    recs = [json.loads(line) for line in open(os.path.join(d, "metrics.jsonl"))]
    assert [(r["step"], r["split"]) for r in recs] == [(1, "train"), (2, "train"), (3, "train"),
                                                      (3, "val")]
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(d))
    truncate_jsonl(os.path.join(d, "metrics.jsonl"), 2)  # a run resumed at step 2
    recs = [json.loads(line) for line in open(os.path.join(d, "metrics.jsonl"))]
    assert [r["step"] for r in recs] == [1, 2]
