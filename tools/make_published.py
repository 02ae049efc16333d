"""Regenerate ``published.csv`` from the shared reference table, adding ltbench's columns.

Usage (from the repository root)::

    python tools/make_published.py ../shared/reference/published.csv

The committed ``published.csv`` is the source of truth; this script records how its ltbench
columns were decided. Every original column and row is kept verbatim (same order); added:

* ``ltbench_method``: the registered method the row's number is for, empty when ltbench has
  no such method;
* ``ltbench_dataset`` and ``ltbench_profile`` (``exp`` / ``step``; empty for datasets with
  fixed split files, where no count profile applies);
* ``ltbench_protocol``: the ltbench protocol preset (``--set protocol=``, ``ltbench.hparams``)
  that reproduces the source's training setup — ``ldam`` (kaidic/LDAM-DRW, n_max 5000/500) or
  ``jamal`` (abdullahjamal/Longtail_DA, n_max 4990/490 after a 10-per-class meta set, also
  ltbench's MW-Net / L2RW setup) — or empty when none does (other backbones, schedules,
  augmentation; protocols.md §4): such rows compare with a configuration of any protocol;
* ``protocol_epochs``: the training length of the protocol that produced the number, empty
  when the source does not state it or the schedule is not counted in epochs. ``ltbench
  check`` and the report compare a row only with configurations trained for that many epochs;
* ``selection`` (``best_test_epoch`` / ``final_epoch`` / ``unknown``) and
  ``selection_source``: which model the number is from, and where that is documented
  (protocols.md §1.3). Held-out-validation selection (ImageNet-LT, Places-LT) never looks at
  the test set, so it is compared with ltbench's final-epoch number;
* ``mapping_note``: why a non-obvious mapping was chosen.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "results" / "published" / "published.csv"

METHODS = {
    "Cross-entropy training": "ce", "Cross-entropy training* (reported in MWN paper)": "ce",
    "ERM": "ce", "CE": "ce", "Softmax": "ce", "Baseline (ERM)": "ce",
    "Joint (instance-balanced)": "ce",
    "Focal loss": "focal", "Focal": "focal", "Focal Loss": "focal",
    "Class-balanced cross-entropy loss": "cb-ce",
    "Class-balanced cross-entropy loss* (reported in MWN paper)": "cb-ce",
    "CB RW": "cb-ce", "CB-CE": "cb-ce", "CB Softmax (beta=0.9999)": "cb-ce",
    "Class-balanced focal loss": "cb-focal", "CB Focal": "cb-focal", "CB-Focal": "cb-focal",
    "ERM-DRW": "ce-drw",
    "LDAM": "ldam", "LDAM loss (results reported in paper)": "ldam",
    "LDAM-DRW": "ldam-drw", "LDAM-DRW (results reported in paper)": "ldam-drw",
    "LDAM+DRW": "ldam-drw",
    "Balanced Softmax": "balanced-softmax", "Balanced Softmax (end-to-end)": "balanced-softmax",
    "Logit adjustment loss": "logit-adjust",
    "Post-hoc logit adjustment": "logit-adjust-posthoc",
    "Class-balanced fine-tuning": "cb-finetune",
    "Class-balanced fine-tuning* (reported in MWN paper)": "cb-finetune",
    "L2RW": "l2rw", "L2RW* (reported in MWN paper)": "l2rw",
    "Meta-weight net": "mwn", "MW-Net": "mwn", "MW-Net (re-implementation)": "mwn",
    "Ours with cross-entropy loss": "meta-ce", "Ours with focal loss": "meta-focal",
    "Ours with LDAM loss": "meta-ldam",
    "cRT": "crt", "cRT (released checkpoint re-evaluated by a user)": "crt",
    "LWS": "lws", "tau-normalization": "tau-norm", "NCM": "ncm",
    "PC Softmax": "pc-softmax", "LADE": "lade",
}

NO_METHOD = {
    "BBN": "no ltbench method (bilateral-branch network)",
    "OLTR": "no ltbench method (OLTR memory module)",
    "Causal Norm": "no ltbench method (causal normalisation)",
    "PC Causal Norm": "no ltbench method (Causal Norm with post-compensation)",
    "PC Balanced Softmax": "no ltbench method (Balanced Softmax with post-compensation)",
    "Balanced Softmax (decoupled)": "no ltbench method (Balanced Softmax + decoupled "
                                    "classifier stage)",
    "BALMS": "no ltbench method (Balanced Softmax + meta sampler)",
    "Joint (class-balanced sampling)": "no ltbench method (class-balanced sampling)",
    "Joint (square-root sampling)": "no ltbench method (square-root sampling)",
    "Joint (progressively-balanced sampling)": "no ltbench method (progressive sampling)",
}

#: (paper, table, method) → (ltbench method, note) where the row's label is misleading.
METHOD_OVERRIDES = {
    ("Hong2021-LADE", "Table2", "LDAM"): (
        "ldam-drw", "the Causal Norm table's 'LDAM' is LDAM-DRW: 42.0 % accuracy at IF 100 "
                    "equals Cao et al.'s LDAM-DRW 57.96 % error (this file), not LDAM's 60.40 %"),
}

MAPPING_NOTES = {
    "Joint (instance-balanced)": "Decoupling's joint training with instance-balanced sampling "
                                 "is plain cross-entropy",
    "MW-Net (re-implementation)": "a re-implementation's own result, kept as a reference point",
    "cRT (released checkpoint re-evaluated by a user)": "user re-evaluation of the released "
                                                        "checkpoint",
    "Cross-entropy training* (reported in MWN paper)": "MW-Net paper's number quoted by Jamal",
    "Class-balanced cross-entropy loss* (reported in MWN paper)": "MW-Net paper's number quoted "
                                                                  "by Jamal",
    "Class-balanced fine-tuning* (reported in MWN paper)": "MW-Net paper's number quoted by "
                                                           "Jamal",
    "L2RW* (reported in MWN paper)": "MW-Net paper's number quoted by Jamal",
}

DATASETS = {
    "CIFAR-10-LT": ("cifar10-lt", "exp"), "CIFAR-10-step": ("cifar10-lt", "step"),
    "CIFAR-100-LT": ("cifar100-lt", "exp"), "ImageNet-LT": ("imagenet-lt", ""),
    "Places-LT": ("places-lt", ""), "iNaturalist2018": ("inat2018", ""),
}

LDAM_CODE = ("kaidic/LDAM-DRW : cifar_train.py reports Best Prec@1, the best test accuracy "
             "over epochs (protocols.md §1.3)")
JAMAL_CODE = ("abdullahjamal/Longtail_DA : C-LT/main.py reports the best test accuracy over "
              "epochs; its baseline rows come from Cao et al. and the MW-Net paper, whose codes "
              "select on the test set too (protocols.md §1.3)")
MWN_CODE = ("xjtushujun/Meta-weight-net_class-imbalance : meta-weight-net-class-imbalance.py "
            "reports the best test accuracy over epochs (protocols.md §1.3)")
LADE_CIFAR = ("hyperconnect/LADE : main.py evaluates the last epoch on CIFAR (best-model "
              "restore skipped for CIFAR; protocols.md §1.3)")
HELD_OUT_VAL = ("selected on the held-out val split, never on test (protocols.md §1.3); "
                "compared with ltbench's final-epoch number")
INAT_VAL_IS_TEST = ("iNaturalist 2018's val list is its test set, so val-based selection "
                    "selects on test (protocols.md §1.3)")
UNDOCUMENTED = "model selection not documented in the reference material"
BORROWED = "number borrowed from another paper; its model selection is not documented"

#: (paper, table) → (selection, selection source, protocol epochs).
TABLES = {
    ("Jamal2020", "CVPR2020-slides CIFAR-10-LT"): ("best_test_epoch", JAMAL_CODE, "200"),
    ("Cao2019-LDAM", "Table2"): ("best_test_epoch", LDAM_CODE, "200"),
    ("Cao2019-LDAM", "issue4"): ("best_test_epoch", LDAM_CODE, "200"),
    ("Cao2019-LDAM", "Table3"): ("unknown", "no iNaturalist code released "
                                 "(kaidic/LDAM-DRW : README.md); " + UNDOCUMENTED, ""),
    ("Cao2019-LDAM", "via-LADE-Table5"): ("unknown", BORROWED, ""),
    ("Cui2019-CB", "Table2"): ("unknown", UNDOCUMENTED + "; richardaecn/class-balanced-loss : "
                               "src/cifar_main.py evaluates every 2 epochs", "200"),
    ("Cui2019-CB", "issue5-rerun"): ("final_epoch", "maintainer's re-run quotes the last "
                                     "checkpoint (richardaecn/class-balanced-loss issue #5)",
                                     "200"),
    ("Cui2019-CB", "via-LADE-Table5"): ("unknown", BORROWED, ""),
    ("Hong2021-LADE", "Table2"): ("final_epoch", LADE_CIFAR, "200"),
    ("Hong2021-LADE", "notebook-calibration"): ("final_epoch", LADE_CIFAR, "200"),
    ("Hong2021-LADE", "notebook-shift"): ("final_epoch", LADE_CIFAR, "200"),
    ("Hong2021-LADE", "poster-Table1"): ("final_epoch", LADE_CIFAR, "200"),
    ("Hong2021-LADE", "Table3"): ("final_epoch", "hyperconnect/LADE : main.py " + HELD_OUT_VAL,
                                  "30"),
    ("Hong2021-LADE", "Table4-90ep"): ("final_epoch", "hyperconnect/LADE : main.py "
                                       + HELD_OUT_VAL, "90"),
    ("Hong2021-LADE", "Table4-180ep"): ("final_epoch", "hyperconnect/LADE : main.py "
                                        + HELD_OUT_VAL, "180"),
    ("Hong2021-LADE", "Table6"): ("final_epoch", "hyperconnect/LADE : main.py " + HELD_OUT_VAL,
                                  "180"),
    ("Hong2021-LADE", "Table5"): ("best_test_epoch", "hyperconnect/LADE : main.py; "
                                  + INAT_VAL_IS_TEST, "200"),
    ("Kang2020-Decoupling", "README"): ("final_epoch", "facebookresearch/classifier-balancing: "
                                        + HELD_OUT_VAL, "90"),
    ("Kang2020-Decoupling", "issue11-reeval"): ("final_epoch", "the README's checkpoint "
                                                "re-evaluated; " + HELD_OUT_VAL, "90"),
    ("Kang2020-Decoupling", "via-LADE-Table3"): ("final_epoch", "facebookresearch/"
                                                 "classifier-balancing: " + HELD_OUT_VAL, ""),
    ("Kang2020-Decoupling", "via-LADE-Table5"): ("unknown", BORROWED, ""),
    ("Menon2021-LA", "README"): ("final_epoch", "google-research/google-research : "
                                 "logit_adjustment/ evaluates the last epoch "
                                 "(protocols.md §1.3)", ""),
    ("Ren2020-BALMS", "README"): ("unknown", UNDOCUMENTED + "; trained for 13,000 iterations, "
                                  "not a whole number of epochs", ""),
    ("Shu2019-MWN", "Table1"): ("best_test_epoch", MWN_CODE, "100"),
    ("ShiYunyi-MWN-reimpl", "README"): ("unknown", UNDOCUMENTED, ""),
    ("Yang2020-SSP", "table"): ("unknown", UNDOCUMENTED, ""),
}

#: Logit adjustment's CIFAR schedules in long-tailed epochs (protocols.md §2.1).
LA_EPOCHS = {"CIFAR-10-LT": "1241", "CIFAR-100-LT": "1419"}

#: Rows of LADE's tables quoted from other papers (their notes say "borrowed" / "from ...").
BORROWED_ROWS = {
    ("Hong2021-LADE", "Table2"): {"Focal Loss", "LDAM", "BBN", "Causal Norm"},
    ("Hong2021-LADE", "Table3"): {"Focal Loss", "OLTR"},
    ("Hong2021-LADE", "Table4-90ep"): {"Focal Loss", "OLTR", "Causal Norm"},
    ("Hong2021-LADE", "Table5"): {"BBN"},
}

#: Jamal's own runs of baselines whose schedule is not stated (protocols.md §3.4, §3.5), and
#: the MW-Net paper's rows Jamal quotes (MW-Net's 100-epoch protocol, protocols.md §3.6).
JAMAL_UNSTATED = {"Class-balanced fine-tuning", "L2RW", "Meta-weight net"}
MWN_PROTOCOL_EPOCHS = "100"


#: Protocol presets by (paper, table). Jamal's baseline rows repeat Cao et al.'s LDAM-protocol
#: numbers (protocols.md §3.1, §4 "published baselines"); its own and the MW-Net paper's rows
#: use the meta-set construction (protocols.md §3.6, §3.7).
PROTOCOLS = {("Cao2019-LDAM", "Table2"): "ldam", ("Cao2019-LDAM", "issue4"): "ldam",
             ("Shu2019-MWN", "Table1"): "jamal"}
JAMAL_OWN = JAMAL_UNSTATED | {"Ours with cross-entropy loss", "Ours with focal loss",
                              "Ours with LDAM loss"}


def _protocol(row: dict[str, str]) -> str:
    if row["paper"] == "Jamal2020":
        return "jamal" if (row["method"] in JAMAL_OWN or "reported in MWN paper"
                           in row["method"]) else "ldam"
    return PROTOCOLS.get((row["paper"], row["table"]), "")


def ltbench_columns(row: dict[str, str]) -> dict[str, str]:
    key = (row["paper"], row["table"])
    selection, source, epochs = TABLES[key]
    if row["method"] in BORROWED_ROWS.get(key, ()):
        selection, source, epochs = "unknown", BORROWED, ""
    if row["paper"] == "Menon2021-LA":
        epochs = LA_EPOCHS[row["dataset"]]
    if row["paper"] == "Jamal2020":
        if row["method"] in JAMAL_UNSTATED:
            epochs = ""
        elif "reported in MWN paper" in row["method"]:
            epochs, source = MWN_PROTOCOL_EPOCHS, MWN_CODE
        elif "results reported in paper" in row["method"]:
            source = LDAM_CODE
    method, note = METHODS.get(row["method"], ""), MAPPING_NOTES.get(row["method"], "")
    if not method:
        note = NO_METHOD[row["method"]]
    method, note = METHOD_OVERRIDES.get((row["paper"], row["table"], row["method"]),
                                        (method, note))
    dataset, profile = DATASETS[row["dataset"]]
    return {"ltbench_method": method, "ltbench_dataset": dataset, "ltbench_profile": profile,
            "ltbench_protocol": _protocol(row), "protocol_epochs": epochs,
            "selection": selection, "selection_source": source, "mapping_note": note}


def main(shared_csv: str) -> None:
    with open(shared_csv, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = list(reader.fieldnames or [])
        rows = list(reader)
    added = list(ltbench_columns(rows[0]))
    with open(OUT, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, columns + added, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, **ltbench_columns(row)})
    print(f"wrote {len(rows)} rows to {OUT}")


if __name__ == "__main__":
    main(sys.argv[1])
