"""Checkpoints: plain data only (torch.load(weights_only=True)), hostile files refused
without running them, and resume = the uninterrupted run.

Resuming exactly needs more than weights and optimizer state: RecBole draws dropout masks
from the global torch RNG and shuffles each epoch with the training DataLoader's own
torch.Generator (seeded once from `seed`), and neither was in the checkpoint, so a resumed
run used other masks and another order than the run it continued. The plugin's trainer
now stores every RNG state (python, numpy, torch, CUDA, the DataLoader's generator) and the
best validation result, and `resume_checkpoint` restores them.

The damaged-file cases of the bad-input catalogue (truncated, pickle payload, foreign
`.pth`, other model) run in tests/test_bad_inputs.py through `load_data_and_model` and
`Trainer.evaluate`; here: `resume_checkpoint`, and proof that the payload is live.
"""

import contextlib
import shutil

import pytest
import torch

from recbole_tfllmer.checkpoint import load_checkpoint
from recbole_tfllmer.errors import CheckpointError
from recbole_tfllmer.quick_start import build_config, prepare
from tests.test_bad_inputs import MarkerPayload, new_workdir, one_torch_thread, precomputed  # noqa: F401

EPOCHS = 4  # the uninterrupted run; the interrupted one stops after EPOCHS // 2


class Crash(Exception):
    """Raised from fit's end-of-epoch callback: the job dies after epoch N."""


def fresh_run(work):
    """What a new process does: config, dataset, splits, model (seeded), trainer."""
    run = prepare(build_config("TFLLMER", work.name, config_dict=work.config))
    return run.trainer, run.train_data, run.valid_data, run.test_data


def finish(trainer, train_data, valid_data, test_data):
    best_score, best_result = trainer.fit(train_data, valid_data, saved=True, show_progress=False)
    test_result = trainer.evaluate(test_data, load_best_model=True)
    state = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    return {
        "best": (best_score, dict(best_result)),
        "test": dict(test_result),
        "state": state,
        "losses": dict(trainer.train_loss_dict),
    }


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    # Dropout on, several batches per epoch (so the shuffle matters), validation every
    # EPOCHS // 2 epochs (so the checkpoint after epoch N is the one RecBole writes).
    work = new_workdir(
        tmp_path_factory.mktemp("resume"),
        epochs=EPOCHS,
        eval_step=EPOCHS // 2,
        train_batch_size=64,
        learning_rate=0.005,
        hidden_dropout_prob=0.3,
        attn_dropout_prob=0.3,
    )
    precomputed(work)
    with contextlib.chdir(work.root):
        yield work


@pytest.fixture(scope="module")
def uninterrupted(work):
    return finish(*fresh_run(work))


@pytest.fixture(scope="module")
def interrupted_checkpoint(work, tmp_path_factory):
    trainer, train_data, valid_data, _ = fresh_run(work)

    def crash_after_epoch_n(epoch_idx, valid_score):
        if epoch_idx == EPOCHS // 2 - 1:
            raise Crash

    with pytest.raises(Crash):
        trainer.fit(train_data, valid_data, saved=True, show_progress=False, callback_fn=crash_after_epoch_n)
    kept = tmp_path_factory.mktemp("kept") / "after-epoch-n.pth"
    shutil.copy(trainer.saved_model_file, kept)
    return kept


def test_checkpoints_are_plain_data(interrupted_checkpoint):
    checkpoint = torch.load(interrupted_checkpoint, weights_only=True)  # torch's strictest loader
    assert checkpoint["epoch"] == EPOCHS // 2 - 1
    assert set(checkpoint["rng_state"]) == {"python", "numpy", "torch", "cuda", "generator"}
    assert isinstance(checkpoint["rng_state"]["generator"], torch.Tensor)
    assert set(checkpoint["best_valid_result"]) == {"ndcg@10", "hit@10"}
    assert all(type(v) is float for v in checkpoint["best_valid_result"].values())


def test_resume_equals_the_uninterrupted_run(work, uninterrupted, interrupted_checkpoint, tmp_path):
    resume_file = tmp_path / "resume.pth"
    shutil.copy(interrupted_checkpoint, resume_file)
    trainer, *data = fresh_run(work)
    trainer.resume_checkpoint(resume_file)
    assert trainer.start_epoch == EPOCHS // 2
    resumed = finish(trainer, *data)

    later = range(EPOCHS // 2, EPOCHS)
    assert {e: resumed["losses"][e] for e in later} == {e: uninterrupted["losses"][e] for e in later}
    assert resumed["best"] == uninterrupted["best"]
    assert resumed["test"] == uninterrupted["test"]
    for name, value in uninterrupted["state"].items():
        assert torch.equal(resumed["state"][name], value), name


def test_without_the_rng_states_resume_drifts(work, uninterrupted, interrupted_checkpoint, tmp_path):
    """Why the states are stored: the same checkpoint without them (as RecBole and this
    plugin wrote them before) continues with other shuffles and dropout masks."""
    old_style = torch.load(interrupted_checkpoint, weights_only=True)
    del old_style["rng_state"]
    torch.save(old_style, tmp_path / "old.pth")
    trainer, train_data, valid_data, _ = fresh_run(work)
    trainer.resume_checkpoint(tmp_path / "old.pth")
    trainer.fit(train_data, valid_data, saved=False, show_progress=False)
    assert trainer.train_loss_dict[EPOCHS // 2] != uninterrupted["losses"][EPOCHS // 2]


def test_resume_refuses_a_pickle_payload_without_running_it(work, interrupted_checkpoint, tmp_path):
    marker = tmp_path / "PWNED"
    hostile = torch.load(interrupted_checkpoint, weights_only=True)
    hostile["optimizer"] = MarkerPayload(marker)
    torch.save(hostile, tmp_path / "hostile.pth")
    trainer, *_ = fresh_run(work)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"refused to load checkpoint .*hostile\.pth.*could execute code"):
        trainer.resume_checkpoint(tmp_path / "hostile.pth")
    with pytest.raises(CheckpointError, match=r"hostile\.pth"):
        load_checkpoint(tmp_path / "hostile.pth")
    assert not marker.exists()
    assert all(torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())
    # The payload is live: the unsafe loader does run it.
    torch.load(tmp_path / "hostile.pth", weights_only=False)
    assert marker.exists()


def test_resume_from_a_truncated_checkpoint_names_the_file(work, interrupted_checkpoint, tmp_path):
    data = interrupted_checkpoint.read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) * 2 // 3])
    trainer, *_ = fresh_run(work)
    with pytest.raises(CheckpointError, match=r"checkpoint '.*cut\.pth' is truncated or corrupted"):
        trainer.resume_checkpoint(tmp_path / "cut.pth")
    with pytest.raises(CheckpointError, match=r"checkpoint file '.*missing\.pth' does not exist"):
        trainer.resume_checkpoint(tmp_path / "missing.pth")
