"""IVPT training: the recipe's pieces, checkpoints that round-trip, and an interrupted run that resumes exactly."""

from __future__ import annotations

import pytest
import torch

import xaikit
from xaikit.errors import XaikitError
from xaikit.testing import TinyDataset
from xaikit.training import TrainProgress
from xaikit_ivpt.checkpoint import CHECKPOINT_FILE, load_checkpoint
from xaikit_ivpt.train import augment, draw_augmentation, epoch_batches, step_generator

SMALL = {"prototypes": [5, 4, 3], "epochs": 2, "train_batch_size": 4, "device": "cpu"}


@pytest.fixture(scope="module")
def data():
    dataset = TinyDataset(classes=2, per_class=8, size=64)
    return dataset.split("train"), dataset.split("test")


@pytest.fixture(scope="module")
def backbone():
    from xaikit.testing import demo_backbone

    return demo_backbone()


def ivpt(backbone, **options):
    return xaikit.create("explainer", "ivpt", backbone=backbone, **{**SMALL, **options})


def state(explainer):
    return {key: value.clone() for key, value in explainer.model.state_dict().items()}


def test_epoch_batches_are_seeded_full_and_disjoint():
    batches = epoch_batches(10, 4, seed=1, epoch=0)
    assert len(batches) == 2 and all(len(batch) == 4 for batch in batches)
    assert len({index for batch in batches for index in batch}) == 8
    assert batches == epoch_batches(10, 4, seed=1, epoch=0)
    assert batches != epoch_batches(10, 4, seed=1, epoch=1)


def test_augmentation_draws_do_not_depend_on_the_share_a_process_takes():
    pixels = torch.randn(4, 3, 16, 16)
    flips, theta = draw_augmentation("reference", step_generator(0, 0, 0), 4, (16, 16))
    whole = augment(pixels, flips, theta)
    share = augment(pixels[2:], flips[2:], theta[2:])
    torch.testing.assert_close(whole[2:], share)
    flips, theta = draw_augmentation("flip", step_generator(0, 0, 0), 4, (16, 16))
    assert theta is None
    flipped = augment(pixels, flips, None)
    for row in range(4):
        torch.testing.assert_close(flipped[row], pixels[row].flip(-1) if flips[row] else pixels[row])
    assert torch.equal(augment(pixels, *draw_augmentation("none", step_generator(0, 0, 0), 4, (16, 16))), pixels)


def test_training_lowers_the_loss_and_checkpoints_every_epoch(backbone, data, tmp_path):
    train, _ = data
    epochs = []

    class Record(TrainProgress):
        def epoch(self, epoch, means):
            epochs.append((epoch, dict(means)))
            assert (tmp_path / CHECKPOINT_FILE).is_file(), "the checkpoint is written before the epoch is reported"

    explainer = ivpt(backbone, epochs=3, lr_head=0.05)
    history = explainer.train(train, tmp_path, progress=Record())
    assert [epoch for epoch, _ in epochs] == [0, 1, 2] and len(history) == 3
    assert history[-1]["ce"] < history[0]["ce"]
    assert set(history[0]) >= {"ce", "consistency", "presence", "background", "equivariance", "entropy", "tv", "orthogonality", "total"}
    saved = load_checkpoint(tmp_path)
    assert saved.metadata["epoch"] == 2 and saved.metadata["classes"] == list(train.classes)
    assert saved.metadata["backbone"]["name"] == "demo-vit" and saved.metadata["backbone"]["fingerprint"] == backbone.fingerprint
    assert saved.metadata["hierarchy"] == explainer.hierarchy and len(saved.metadata["hierarchy"]) == 2
    assert saved.optimizer is not None and saved.scheduler["last_epoch"] == 3


def test_a_zero_weight_switches_a_term_off(backbone, data):
    train, _ = data
    history = ivpt(backbone, epochs=1, equivariance_weight=0.0, tv_weight=0.0).train(train)
    assert "equivariance" not in history[0] and "tv" not in history[0] and "ce" in history[0]


def test_a_checkpoint_round_trips_to_identical_outputs(backbone, data, tmp_path):
    train, test = data
    trained = ivpt(backbone)
    trained.train(train, tmp_path)
    loaded = xaikit.create("explainer", "ivpt", checkpoint=str(tmp_path), device="cpu").fit(train)
    samples = list(test)
    first, second = trained.explain(samples), loaded.explain(samples)
    torch.testing.assert_close(first.scores, second.scores, rtol=0, atol=0)
    assert first.details == second.details
    images = torch.rand(2, 3, 64, 64)
    torch.testing.assert_close(trained.concept_maps(images), loaded.concept_maps(images), rtol=0, atol=0)
    assert loaded.hierarchy == trained.hierarchy and loaded.architecture["prototypes"] == [5, 4, 3]


def test_a_checkpoint_of_a_local_timm_backbone_built_in_python_loads_by_name(data, tmp_path):
    """The backbone's options (weights file, input size) go into the checkpoint, so bench can rebuild it."""
    import timm
    from safetensors.torch import save_file

    architecture = {"patch_size": 16, "embed_dim": 32, "depth": 3, "num_heads": 2, "reg_tokens": 4}
    torch.manual_seed(0)
    save_file(timm.create_model("vit_tiny_patch16_224", num_classes=0, **architecture).state_dict(), tmp_path / "vit.safetensors")
    backbone = xaikit.create(
        "backbone", "timm:vit_tiny_patch16_224", weights=str(tmp_path / "vit.safetensors"), model_args=architecture,
        image_size=64, device="cpu",
    )
    train, test = data
    trained = ivpt(backbone, epochs=1)
    trained.train(train, tmp_path / "run")
    recorded = load_checkpoint(tmp_path / "run").metadata["backbone"]
    assert recorded["options"]["weights"] == str(tmp_path / "vit.safetensors") and recorded["options"]["image_size"] == 64
    loaded = xaikit.create("explainer", "ivpt", checkpoint=str(tmp_path / "run"), device="cpu")
    assert loaded.backbone.fingerprint == backbone.fingerprint and loaded.backbone.preprocessing == backbone.preprocessing
    samples = list(test)
    torch.testing.assert_close(trained.explain(samples).scores, loaded.explain(samples).scores, rtol=0, atol=0)


def test_an_interrupted_training_resumes_to_the_uninterrupted_weights(backbone, data, tmp_path):
    train, _ = data
    options = {"epochs": 3, "augment": "reference"}
    straight = ivpt(backbone, **options)
    straight.train(train, tmp_path / "straight")

    class CtrlC(TrainProgress):
        def epoch(self, epoch, means):
            if epoch == 0:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ivpt(backbone, **options).train(train, tmp_path / "resumed", progress=CtrlC())
    assert load_checkpoint(tmp_path / "resumed").metadata["epoch"] == 0
    resumed = ivpt(backbone, **options)
    history = resumed.train(train, tmp_path / "resumed", resume=True)
    assert [entry["epoch"] for entry in history] == [0, 1, 2]
    expected, got = state(straight), state(resumed)
    assert expected.keys() == got.keys()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0, msg=key)


def test_evaluation_is_deterministic_and_the_reference_gumbel_evaluation_is_an_option(backbone, data):
    train, test = data
    explainer = ivpt(backbone, epochs=1)
    explainer.fit(train)
    samples = list(test)
    torch.testing.assert_close(explainer.explain(samples).scores, explainer.explain(samples).scores, rtol=0, atol=0)
    explainer.eval_grouping = "gumbel"
    assert not torch.equal(explainer.explain(samples).scores, explainer.explain(samples).scores)


def test_loading_refuses_other_backbone_weights_other_classes_and_bad_files(backbone, data, tmp_path):
    train, _ = data
    ivpt(backbone, epochs=1).train(train, tmp_path)
    other = xaikit.create("backbone", "timm:vit_tiny_patch16_224", pretrained=False, image_size=112, model_args={"patch_size": 8, "embed_dim": 128, "depth": 6, "num_heads": 4}, device="cpu")
    with pytest.raises(XaikitError, match="other weights"):
        xaikit.create("explainer", "ivpt", backbone=other, checkpoint=str(tmp_path))
    loaded = xaikit.create("explainer", "ivpt", checkpoint=str(tmp_path), device="cpu")
    with pytest.raises(XaikitError, match="other classes"):
        loaded.fit(TinyDataset(classes=3, per_class=2).split("train"))
    with pytest.raises(XaikitError, match="no IVPT checkpoint"):
        xaikit.create("explainer", "ivpt", checkpoint=str(tmp_path / "missing"))
    (tmp_path / "bad.safetensors").write_bytes(b"not a checkpoint at all")
    with pytest.raises(XaikitError, match="not a readable safetensors"):
        xaikit.create("explainer", "ivpt", checkpoint=str(tmp_path / "bad.safetensors"))


def test_training_refuses_what_cannot_work(backbone, data):
    train, _ = data
    with pytest.raises(XaikitError, match="fewer than one batch"):
        ivpt(backbone, train_batch_size=64).train(train)
    with pytest.raises(XaikitError, match="augment"):
        ivpt(backbone, augment="mixup")
    with pytest.raises(XaikitError, match="concept_layer"):
        ivpt(backbone, concept_layer=3)
    with pytest.raises(XaikitError, match="not trained"):
        ivpt(backbone).explain(list(train))
