"""The IVPT network on the real demo-vit: shapes of every intermediate, Eq. 5-7, prompts, heads, gradients."""

from __future__ import annotations

import pytest
import torch

from xaikit.errors import XaikitError
from xaikit.testing import demo_backbone
from xaikit_ivpt.geometry import Affine
from xaikit_ivpt.losses import LossOptions, LossWeights
from xaikit_ivpt.model import IVPTModel, aggregate_regions, concept_regions, layer_names


@pytest.fixture(scope="module")
def backbone():
    return demo_backbone()


@pytest.fixture(scope="module")
def pixels():
    return torch.randn(3, 3, 112, 112, generator=torch.Generator().manual_seed(0))


def make(backbone, **options):
    torch.manual_seed(0)
    return IVPTModel(backbone.model, (14, 14), 7, **options)


def test_every_intermediate_has_its_documented_shape(backbone, pixels):
    model = make(backbone)
    output = model(pixels, grouping="gumbel")
    assert tuple(output.logits.shape) == (3, 7)
    assert tuple(output.part_scores.shape) == (3, 7, 4)
    assert [tuple(m.shape) for m in output.maps] == [(3, n, 14, 14) for n in (17, 14, 11, 8, 5)]
    assert [tuple(m.shape) for m in output.fused] == [(3, 5, 14, 14)] * 4
    assert [tuple(w.shape) for w in output.grouping] == [(3, n - 1, 4) for n in (17, 14, 11, 8)]
    assert tuple(output.features.shape) == (3, 128, 5)
    torch.testing.assert_close(output.logits, output.part_scores.mean(-1))
    for maps in output.maps + output.fused:  # probabilities over channels at every patch
        torch.testing.assert_close(maps.sum(1), torch.ones(3, 14, 14))
    for weights in output.grouping:
        torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:2]))


def test_every_block_runs_and_without_prompts_the_tokens_are_the_vits(backbone, pixels):
    """With only the final set there are no prompts: IVPT's final tokens are the frozen ViT's own features."""
    model = make(backbone, prototypes=(5,))
    seen = []
    hooks = [block.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[1])) for block in backbone.model.blocks]
    try:
        with torch.no_grad():
            regions = model(pixels).maps[-1]
            full = make(backbone)(pixels)
    finally:
        for hook in hooks:
            hook.remove()
    assert seen[:6] == [197] * 6, "all six blocks run on CLS + 196 patches"
    assert seen[6:] == [197, 197, 201, 201, 201, 201], "the last four blocks also see the four prompts"
    with torch.no_grad():
        tokens = backbone.model.forward_features(pixels)[:, 1:]
        expected = torch.softmax(-torch.cdist(tokens, model.prototypes[0].expand(3, 5, 128)).pow(2), dim=-1)
    torch.testing.assert_close(regions, expected.transpose(1, 2).reshape(3, 5, 14, 14), atol=1e-4, rtol=1e-4)
    assert full.logits is not None


def test_prototype_sets_sit_at_the_last_blocks_then_after_the_final_one(backbone):
    assert make(backbone).layer_names == ["block 2", "block 3", "block 4", "block 5", "final"]
    assert layer_names(12, 5) == ["block 8", "block 9", "block 10", "block 11", "final"]
    assert make(backbone, prototypes=(6, 3)).layer_names == ["block 5", "final"]


def test_initialisation_follows_the_reference(backbone):
    model = make(backbone)
    assert all(float(bias.detach().abs().sum()) == 0 for bias in model.bias)
    stacked = torch.cat([p.detach().flatten() for p in model.prototypes])
    assert abs(float(stacked.std()) - 0.05) < 0.005 and abs(float(stacked.mean())) < 0.005
    torch.testing.assert_close(model.pos_embed, backbone.model.pos_embed)
    assert model.pos_embed is not backbone.model.pos_embed
    names = {name.split(".")[0] for name, _ in model.named_parameters()}
    assert "blocks" not in names and "patch_embed" not in names, "the frozen ViT must not be part of the module"


def test_concept_regions_is_a_softmax_of_negative_squared_distance_plus_bias():
    features = torch.randn(2, 6, 4)
    prototypes = torch.randn(3, 4)
    bias = torch.randn(3, 6)
    expected = torch.softmax(-torch.cdist(features, prototypes.expand(2, 3, 4)).pow(2) + bias.t(), dim=-1)
    torch.testing.assert_close(concept_regions(features, prototypes, bias), expected, atol=1e-5, rtol=1e-5)


def test_aggregation_averages_each_prototypes_winning_patches_weighted_by_probability():
    regions = torch.tensor([[[0.7, 0.3], [0.6, 0.4], [0.1, 0.9]]])  # patch 0, 1 -> prototype 0; patch 2 -> 1
    features = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]])
    pooled = aggregate_regions(regions, features)
    torch.testing.assert_close(pooled[0, 0], torch.tensor([0.7, 0.6]) / 1.3)
    torch.testing.assert_close(pooled[0, 1], torch.tensor([5.0, 5.0]))
    empty = aggregate_regions(torch.tensor([[[0.9, 0.1], [0.8, 0.2]]]), torch.ones(1, 2, 2))
    torch.testing.assert_close(empty[0, 1], torch.zeros(2)), "a prototype that wins nowhere pools nothing"


def test_softmax_grouping_is_deterministic_and_gumbel_is_not(backbone, pixels):
    model = make(backbone).eval()
    with torch.no_grad():
        first, second = model(pixels), model(pixels)
        torch.testing.assert_close(first.logits, second.logits, rtol=0, atol=0)
        noisy = [model(pixels, grouping="gumbel").grouping[0] for _ in range(2)]
    assert not torch.allclose(*noisy)


def test_until_stops_after_the_requested_maps(backbone, pixels):
    model = make(backbone)
    with torch.no_grad():
        full = model(pixels)
        early = model(pixels, until=2)
    assert early.logits is None and len(early.maps) == 3
    torch.testing.assert_close(early.maps[2], full.maps[2])


def test_prompts_change_the_next_blocks_tokens(backbone, pixels):
    """The prompts join the attention of one block: zeroing their projection changes the maps after it."""
    model = make(backbone).eval()
    with torch.no_grad():
        before = model(pixels).maps[1]
        for linear in model.prompt_linear:
            linear.weight.zero_()
            linear.bias.zero_()
        after = model(pixels).maps[1]
    assert not torch.allclose(before, after)


def test_heads_shared_and_per_concept(backbone, pixels):
    shared = make(backbone, head="shared")
    per_concept = make(backbone, head="per-concept")
    assert tuple(shared.head.shape) == (7, 128) and tuple(per_concept.head.shape) == (4, 7, 128)
    with torch.no_grad():
        per_concept.head.copy_(shared.head.expand(4, 7, 128))
        for name, parameter in shared.named_parameters():
            if name != "head":
                dict(per_concept.named_parameters())[name].copy_(parameter)
    torch.testing.assert_close(shared(pixels).logits, per_concept(pixels).logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("train_prompt_norm", [False, True])
def test_gradients_reach_every_trainable_parameter_and_not_the_frozen_vit(backbone, pixels, train_prompt_norm):
    model = make(backbone, train_prompt_norm=train_prompt_norm)
    output = model(pixels, grouping="gumbel")
    (output.logits.sum() + sum(m.pow(2).sum() for m in output.maps + output.fused)).backward()
    trainable = [(name, parameter) for name, parameter in model.named_parameters() if parameter.requires_grad]
    missing = [name for name, parameter in trainable if parameter.grad is None or not bool(parameter.grad.abs().sum() > 0)]
    assert not missing, f"no gradient for {missing}"
    frozen = {name for name, parameter in model.named_parameters() if not parameter.requires_grad}
    assert frozen == (set() if train_prompt_norm else {name for name, _ in model.named_parameters() if name.startswith("prompt_norm")})
    assert all(parameter.grad is None for parameter in backbone.model.parameters())


@pytest.mark.parametrize("train_prompt_norm", [False, True])
def test_parameter_groups_split_tokens_from_heads(backbone, train_prompt_norm):
    """The reference leaves the prompt LayerNorm out of every optimiser group: it stays the identity."""
    model = make(backbone, train_prompt_norm=train_prompt_norm)
    slow, fast = model.parameter_groups(2e-4, 1e-2)
    assert slow["lr"] == 2e-4 and fast["lr"] == 1e-2
    norm = {id(p) for p in model.prompt_norm.parameters()}
    grouped = {id(p) for p in slow["params"] + fast["params"]}
    assert bool(norm & grouped) is train_prompt_norm
    assert grouped | norm == {id(p) for p in model.parameters()}
    assert any(p is model.pos_embed for p in slow["params"]) and any(p is model.head for p in fast["params"])


def test_initialisation_of_head_and_prompt_layers(backbone):
    """Reference: trunc_normal(std=0.02) weights and zero biases; ``pytorch``: nn.Linear's Kaiming-uniform."""
    reference, plain = make(backbone, head="per-concept"), make(backbone, init="pytorch", head="per-concept")
    for weight in (reference.head.detach(), *(linear.weight.detach() for linear in reference.prompt_linear)):
        assert abs(float(weight.std()) - 0.02) < 0.002 and float(weight.abs().max()) < 0.02 * 6
    assert all(float(linear.bias.detach().abs().sum()) == 0 for linear in reference.prompt_linear)
    bound = 128**-0.5  # Kaiming-uniform with a = sqrt(5): U(-1/sqrt(fan_in), 1/sqrt(fan_in)), std bound / sqrt(3)
    head = plain.head.detach()
    assert abs(float(head.std()) - bound / 3**0.5) < 0.005 and float(head.abs().max()) <= bound
    assert float(plain.prompt_linear[0].bias.detach().abs().sum()) > 0
    with pytest.raises(XaikitError, match="init"):
        make(backbone, init="xavier")


def empty_foreground(model, pixels):
    """``(B, n - 1)`` bool: the foreground regions of the first prototype set that no patch wins."""
    with torch.no_grad():
        maps = model(pixels, until=0).maps[0]
    return torch.nn.functional.one_hot(maps.flatten(2).argmax(1), maps.shape[1]).sum(1)[:, :-1] == 0


@pytest.mark.parametrize("empty_regions", ["uniform", "grouping"])
def test_a_region_no_patch_wins_gets_uniform_grouping_weights(backbone, pixels, empty_regions):
    model = make(backbone, empty_regions=empty_regions).eval()
    empty = empty_foreground(model, pixels)
    assert empty.any() and not empty.all(), "17 random prototypes on 196 patches leave some regions empty"
    with torch.no_grad():
        weights = model(pixels).grouping[0]
        of_zero = torch.softmax(model.grouping[0].bias, dim=-1)  # the grouping layer on the zero region feature
    expected = torch.full((4,), 0.25) if empty_regions == "uniform" else of_zero
    torch.testing.assert_close(weights[empty], expected.expand(int(empty.sum()), 4))
    assert not torch.allclose(weights[~empty], torch.full_like(weights[~empty], 0.25))
    with pytest.raises(XaikitError, match="empty_regions"):
        make(backbone, empty_regions="zero")


@pytest.mark.parametrize(("prompt_regions", "reaches"), [("detached", False), ("attached", True)])
def test_prompt_regions_are_pooled_from_detached_maps_and_tokens(backbone, pixels, prompt_regions, reaches):
    """Reference: the prompts' region features come from detached maps and tokens, so the logits'
    gradient never reaches a prototype set through its prompts (only through its own maps)."""
    model = make(backbone, prompt_regions=prompt_regions)
    logits = model(pixels).logits
    gradient = torch.autograd.grad(logits.sum(), [model.prototypes[0], model.bias[0]], allow_unused=True)
    assert all((g is not None and bool(g.abs().sum() > 0)) is reaches for g in gradient)
    with torch.no_grad():
        torch.testing.assert_close(model(pixels).logits, make(backbone, prompt_regions="attached")(pixels).logits)
    with pytest.raises(XaikitError, match="prompt_regions"):
        make(backbone, prompt_regions="both")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"prototypes": (5, 1)}, "prototypes"),
        ({"prototypes": ()}, "at least one"),
        ({"prototypes": (3,) * 8}, "blocks"),
        ({"head": "both"}, "head"),
    ],
)
def test_bad_options_are_one_sentence(backbone, options, message):
    with pytest.raises(XaikitError, match=message):
        make(backbone, **options)


def test_only_timm_vision_transformers(backbone):
    with pytest.raises(XaikitError, match="timm VisionTransformer"):
        IVPTModel(torch.nn.Linear(2, 2), (14, 14), 3)
    with pytest.raises(XaikitError, match="grid"):
        IVPTModel(backbone.model, (7, 7), 3)


def test_register_tokens_and_unembedded_prefix_of_dinov2_with_registers():
    """A DINOv2-with-registers architecture (5 prefix tokens, position embedding on patches only) from timm."""
    import xaikit

    backbone = xaikit.create(
        "backbone", "timm:vit_small_patch14_reg4_dinov2", pretrained=False, image_size=56,
        model_args={"embed_dim": 32, "depth": 3, "num_heads": 2}, device="cpu",
    )
    vit = backbone.model
    assert vit.num_prefix_tokens == 5 and vit.no_embed_class
    torch.manual_seed(0)
    model = IVPTModel(vit, (4, 4), 3, prototypes=(4,))
    pixels = torch.randn(2, 3, 56, 56)
    with torch.no_grad():
        maps = model(pixels).maps[-1]
        tokens = vit.forward_features(pixels)[:, 5:]
    expected = torch.softmax(-torch.cdist(tokens, model.prototypes[0].expand(2, 4, 32)).pow(2), dim=-1)
    torch.testing.assert_close(maps, expected.transpose(1, 2).reshape(2, 4, 4, 4), atol=1e-4, rtol=1e-4)
    assert model.reg_token is not None and tuple(model.reg_token.shape) == (1, 4, 32)
    full = IVPTModel(vit, (4, 4), 3, prototypes=(5, 4, 3))(pixels)
    assert tuple(full.logits.shape) == (2, 3) and [tuple(m.shape) for m in full.maps] == [(2, n, 4, 4) for n in (5, 4, 3)]


@pytest.mark.parametrize(("target", "reaches"), [("detached", False), ("attached", True)])
def test_the_consistency_target_is_detached_as_in_the_reference(backbone, pixels, target, reaches):
    """Reference: KL(final.detach() || fused), so the consistency term never moves the final prototypes."""
    from xaikit_ivpt.objective import loss_terms

    model = make(backbone)
    only = LossWeights(ce=0, presence=0, background=0, equivariance=0, entropy=0, tv=0, orthogonality=0)
    terms = loss_terms(model, pixels, torch.zeros(3, dtype=torch.long), only, Affine(0.0, (0.0, 0.0), 1.0), "softmax",
                       LossOptions(consistency_target=target))
    assert set(terms) == {"consistency"}
    final, fused = torch.autograd.grad(terms["consistency"], [model.prototypes[-1], model.prototypes[0]], allow_unused=True)
    assert (final is not None and bool(final.abs().sum() > 0)) is reaches
    assert fused is not None and bool(fused.abs().sum() > 0), "the fused maps always move"


@pytest.mark.parametrize(
    ("option", "value"),
    [("empty_regions", "zero"), ("prompt_regions", "both"), ("train_prompt_norm", "yes"), ("init", "xavier"),
     ("consistency_target", "frozen"), ("tv_normalisation", "sum"), ("background_mask", "ring"), ("equivariance_mask", 1)],
)
def test_the_explainer_refuses_a_bad_reference_option_before_training(option, value):
    from xaikit_ivpt.explainer import IVPT

    with pytest.raises(XaikitError, match=option):
        IVPT(**{option: value})
