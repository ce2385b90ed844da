"""TensorBoard: one run per (round, branch) and one experiment-level run.

    tensorboard/round_NN_<branch>/   train loss/accuracy and learning rate every
                                     log_every steps; validation and test loss/accuracy
                                     at each evaluation; per-layer density and weight
                                     histograms at the start and end of the round
    tensorboard/lottery/             the resolved config as text; the Custom Scalars layout
                                     that puts ticket and controls on one chart
    tensorboard/lottery/<branch>/    the LTH curves, each tag ending in its branch: final
                                     and early-stop test accuracy, the early-stop iteration,
                                     and (ticket) % weights remaining, overall and per layer,
                                     with the step axis = the round (0 = dense)

Tag groups sort so that Time Series opens on `lottery/`, then `lottery_density/`; `weights/` comes last.
"""
import json
import os
import shutil

import tensorflow as tf
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.custom_scalar import summary as custom_scalar_summary

from lth_tf import paths, pruning

LOTTERY_RUN = "lottery"


def lottery_run(output_dir: str) -> str:
    return os.path.join(paths.tensorboard(output_dir), LOTTERY_RUN)


def branch_run(output_dir: str, round_index: int, branch: str) -> str:
    return paths.tensorboard_branch(output_dir, round_index, branch)


def branch_writer(output_dir, round_index, branch):
    return tf.summary.create_file_writer(branch_run(output_dir, round_index, branch))


def log_train(writer, step: int, loss: float, accuracy: float, learning_rate: float):
    with writer.as_default(step=step):
        tf.summary.scalar("train/loss", loss)
        tf.summary.scalar("train/accuracy", accuracy)
        tf.summary.scalar("train/learning_rate", learning_rate)


def log_eval(writer, record: dict):
    with writer.as_default(step=record["step"]):
        for split in ("val", "test"):
            if f"{split}_loss" in record:
                tf.summary.scalar(f"{split}/loss", record[f"{split}_loss"])
                tf.summary.scalar(f"{split}/accuracy", record[f"{split}_accuracy"])


def log_weights(writer, step: int, when: str, state: dict, masks: dict):
    """Per-layer density and histograms of the surviving weights ('start' or 'end')."""
    with writer.as_default(step=step):
        for name, mask in masks.items():
            tf.summary.scalar(f"weights/density_{when}/{name}", float(mask.mean()))
            weight = state[pruning.variable_of(name)]
            tf.summary.histogram(f"weights/surviving_{when}/{name}", weight[mask > 0])
    writer.flush()


def _chart(title: str, tag_regex: str):
    return layout_pb2.Chart(title=title, multiline=layout_pb2.MultilineChartContent(tag=[tag_regex]))


# TensorBoard's Custom Scalars page: one chart per LTH figure, every branch on it (each branch is a run of its
# own, so each gets its own colour, and each tag names its branch, so a series says what it is). The step axis
# is the round: dense at 0 on the left, each round sparser, as the papers draw % weights remaining.
LAYOUT = layout_pb2.Layout(category=[layout_pb2.Category(
    title="lottery ticket vs controls (x axis: pruning round; 0 = dense, % weights remaining in its own chart)",
    chart=[_chart("final test accuracy, per round", r"^lottery/test_accuracy/"),
           _chart("test accuracy at early stop (min validation loss), per round",
                  r"^lottery/early_stop_test_accuracy/"),
           _chart("early-stop iteration, per round", r"^lottery/early_stop_step/"),
           _chart("ticket: % weights remaining, per round", r"^lottery/weights_remaining_pct/"),
           _chart("ticket: % weights remaining per layer, per round", r"^lottery_density/")])])

def write_lottery_run(output_dir: str, rows: list[dict], config: dict):
    """Rewrites the experiment-level runs from results.csv rows (so a resumed
    run never holds a value twice): `lottery` (the layout, the config) and
    `lottery/<branch>` (its curves)."""
    path = lottery_run(output_dir)
    shutil.rmtree(path, ignore_errors=True)
    writer = tf.summary.create_file_writer(path)
    with writer.as_default():
        tf.summary.experimental.write_raw_pb(custom_scalar_summary.pb(LAYOUT).SerializeToString(), step=0)
        tf.summary.text("config", "```\n" + json.dumps(config, indent=2, sort_keys=True) + "\n```", step=0)
    writer.close()
    finished = [r for r in rows if r["status"] == "ok"]
    for branch in dict.fromkeys(r["branch"] for r in finished):
        writer = tf.summary.create_file_writer(os.path.join(path, branch))
        branch_rows = sorted((r for r in finished if r["branch"] == branch), key=lambda r: int(r["round"]))
        with writer.as_default():
            for row in branch_rows:
                step = int(row["round"])
                for column in ("test_accuracy", "early_stop_test_accuracy", "early_stop_step"):
                    tf.summary.scalar(f"lottery/{column}/{branch}", float(row[column]), step=step)
                if branch == "ticket":  # a round's controls have its density: one line, not several on top
                    tf.summary.scalar("lottery/weights_remaining_pct/ticket", float(row["weights_remaining_pct"]),
                                      step=step)
                    for layer, density in row.get("layer_density", {}).items():
                        tf.summary.scalar(f"lottery_density/{layer}", 100 * density, step=step)
        writer.close()
