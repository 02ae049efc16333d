"""The report's shifted-test-distribution table and chart, from stored ``evals`` artifacts."""

from __future__ import annotations

import pandas as pd
import pytest
from helpers import summarized_record

from ltbench.metrics.shifted import EVAL_COLUMNS, SHIFTED_SETS
from ltbench.report.site import write_report
from ltbench.store.result_store import ResultStore


def _evals(run_id: str, base: float) -> pd.DataFrame:
    """Accuracy ``base + k`` on the k-th shifted set."""
    return pd.DataFrame([{"run_id": run_id, "eval_set": name, "direction": direction,
                          "rho": rho, "n_test": 100, "top1_acc": base + k}
                         for k, (name, direction, rho) in enumerate(SHIFTED_SETS)],
                        columns=EVAL_COLUMNS)


def test_report_has_a_lade_style_table_and_chart(tmp_path):
    store = ResultStore(tmp_path / "results")
    for method, bases in (("ce", (40.0, 42.0)), ("pc-softmax", (50.0, 50.0))):
        for seed, base in enumerate(bases):
            run_id = f"{method}-{seed}"
            store.write(summarized_record(run_id, method=method, dataset="cifar100-lt",
                                          imb=100, seed=seed, base_err=60.0),
                        {"evals": _evals(run_id, base)})
    out = tmp_path / "report"
    write_report(store, out)
    data = pd.read_csv(out / "data" / "cifar100-lt_shifted_acc.csv")
    ce_f50 = data[(data["configuration"] == "ce") & (data["eval_set"] == "F50")].iloc[0]
    assert ce_f50["mean"] == 41.0 and ce_f50["std"] == pytest.approx(2 ** 0.5)
    assert ce_f50["n"] == 2
    pc_b50 = data[(data["configuration"] == "pc-softmax") & (data["eval_set"] == "B50")].iloc[0]
    assert pc_b50["mean"] == 60.0 and pc_b50["std"] == 0.0
    markdown = (out / "results.md").read_text()
    assert "| method | F50 | F25 | F10 | F5 | F2 | U1 | B2 | B5 | B10 | B25 | B50 |" in markdown
    assert "| pc-softmax | **50.00 ± 0.00 (n=2, no CI)** |" in markdown
    page = (out / "cifar100-lt.html").read_text()
    assert "Shifted test label distributions, IF 100" in page
    chart = pd.read_csv(out / "data" / "cifar100-lt_shifted_if100.csv")
    assert len(chart) == 2 * 11
