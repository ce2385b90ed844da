"""The lottery driver: iterative magnitude pruning's rounds (train, prune,
rewind, retrain) with their controls, and the other ways of finding masks
behind one interface.

    for each round r = 0 .. --rounds:
        masks = the round's masks (dense in round 0; then the run's MaskFinder's, made once and saved)
        for each branch (the ticket, each control, the finder's extra branches):
            read it back if it finished before, else rewind it and train it (resuming a checkpoint)
        export the round's ticket if asked

    setup.py   an experiment made ready: config, data, wrapped model, trainer, theta_0; RunOptions
    masks.py   the ways of finding masks (MaskFinder: IMP, one-shot, at-init scoring, early-bird; their
               --prune_method names are registered in lth_tf.config.PRUNE_METHODS)
    branch.py  where a branch starts, and its resumable training (train_branch, shared with the analyses)
    driver.py  the loop above, results.csv, TensorBoard's lottery run, exports

Every file these write is named in lth_tf.paths; a rerun on the same
directory resumes because each phase skips itself when its output exists.
"""
from lth_tf.lottery.branch import branch_start, run_branch, train_branch
from lth_tf.lottery.driver import run
from lth_tf.lottery.masks import MaskFinder, check_workers_agree, finder, round_masks
from lth_tf.lottery.setup import (Experiment, Failed, RunOptions, available_masks, build_plain, control_seed,
                                  initial_state, prepare, reopen)

__all__ = ["Experiment", "Failed", "MaskFinder", "RunOptions", "available_masks", "branch_start", "build_plain",
           "check_workers_agree", "control_seed", "finder", "initial_state", "prepare", "reopen", "round_masks", "run",
           "run_branch", "train_branch"]
