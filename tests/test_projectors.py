"""Projectors: output shapes, the token counts the processor relies on, masking, registry errors."""

from __future__ import annotations

import pytest
import torch

from bioreason.projectors import PROJECTORS, build_projector, normalize_spec, num_output_tokens

SPECS = ["linear", "mlp2x_gelu", {"type": "resampler", "options": {"num_queries": 5, "width": 16, "heads": 2}}, "mean"]


@pytest.mark.parametrize("spec", SPECS)
def test_shapes_and_token_counts(spec):
    projector = build_projector(spec, in_dim=12, out_dim=20)
    emb, mask = torch.randn(3, 7, 12), torch.ones(3, 7, dtype=torch.bool)
    mask[1, 4:] = False
    out = projector(emb, mask)
    out_mask = projector.output_mask(mask)
    assert out.shape[:2] == out_mask.shape and out.shape[-1] == 20
    expected = [num_output_tokens(spec, n) for n in mask.sum(-1).tolist()]
    assert out_mask.sum(-1).tolist() == expected


@pytest.mark.parametrize("spec", SPECS[2:])
def test_pooling_projectors_ignore_padded_positions(spec):
    projector = build_projector(spec, in_dim=12, out_dim=20).eval()
    emb, mask = torch.randn(1, 7, 12), torch.ones(1, 7, dtype=torch.bool)
    mask[0, 4:] = False
    changed = emb.clone()
    changed[0, 4:] = 100.0  # garbage in the padding must not leak into the features
    assert torch.allclose(projector(emb, mask), projector(changed, mask), atol=1e-6)


def test_resampler_compresses_to_k_tokens_whatever_the_length():
    spec = {"type": "resampler", "options": {"num_queries": 32}}
    assert num_output_tokens(spec, 1000) == num_output_tokens(spec, 10) == 32
    assert num_output_tokens("linear", 1000) == 1000
    assert num_output_tokens("mean", 1000) == 1


def test_mlp_alias_sets_depth():
    assert normalize_spec("mlp3x_gelu") == {"type": "mlp", "options": {"depth": 3}}
    projector = build_projector("mlp3x_gelu", 4, 8)
    assert sum(isinstance(m, torch.nn.Linear) for m in projector.modules()) == 3


def test_unknown_projector_names_the_available_ones():
    available = r"\['linear', 'mean', 'mlp', 'resampler'\]"
    with pytest.raises(ValueError, match=rf"Unknown projector 'qformer'; available: {available}"):
        build_projector("qformer", 4, 8)
    assert set(PROJECTORS) == {"linear", "mlp", "resampler", "mean"}


@pytest.mark.parametrize("spec", SPECS)
def test_output_norm_fixes_every_token_norm_and_travels_in_the_options(spec):
    spec = normalize_spec(spec)
    spec["options"]["output_norm"] = 2.5
    projector = build_projector(spec, in_dim=12, out_dim=20)
    emb, mask = torch.randn(3, 7, 12) * 50, torch.ones(3, 7, dtype=torch.bool)
    out = projector.rescale(projector(emb, mask))
    assert torch.allclose(out.norm(dim=-1), torch.full(out.shape[:2], 2.5), atol=1e-4)
    assert projector.options["output_norm"] == 2.5
    rebuilt = build_projector({"type": spec["type"], "options": projector.options}, in_dim=12, out_dim=20)
    rebuilt.load_state_dict(projector.state_dict())
    assert torch.equal(rebuilt.rescale(rebuilt(emb, mask)), out)


def test_without_output_norm_the_scale_is_the_projectors_own():
    projector = build_projector("linear", 12, 20)
    emb, mask = torch.randn(2, 5, 12), torch.ones(2, 5, dtype=torch.bool)
    assert torch.equal(projector.rescale(projector(emb, mask)), projector(emb, mask))
    assert "output_norm" not in projector.options


@pytest.mark.parametrize("bad", ["loud", 0, -1.0])
def test_a_bad_output_norm_is_refused(bad):
    with pytest.raises(ValueError, match="output_norm must be"):
        build_projector({"type": "linear", "options": {"output_norm": bad}}, 12, 20)
