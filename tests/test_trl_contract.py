"""The TRL seam: every private GRPOTrainer method BioGRPOTrainer overrides exists in the installed TRL with the
parameters it relies on, and a TRL that renamed or reshaped one is an error naming the method."""

from __future__ import annotations

import pytest
from trl import GRPOTrainer

from bioreason.training.grpo_trainer import TRL_CONTRACT, BioGRPOTrainer, check_trl_contract


def test_the_installed_trl_meets_the_contract():
    check_trl_contract(GRPOTrainer)


def test_every_override_is_in_the_contract():
    """A new private override must be added to TRL_CONTRACT (so a TRL release that drops it is caught)."""
    overridden = {name for name in vars(BioGRPOTrainer) if name.startswith("_") and not name.startswith("__")
                  and hasattr(GRPOTrainer, name)}
    assert overridden == set(TRL_CONTRACT)


@pytest.mark.parametrize("name", sorted(TRL_CONTRACT))
def test_a_renamed_method_is_named_in_the_error(name):
    renamed = type("FutureGRPOTrainer", (), {n: getattr(GRPOTrainer, n) for n in TRL_CONTRACT if n != name})
    with pytest.raises(RuntimeError, match=rf"GRPOTrainer\.{name} no longer exists"):
        check_trl_contract(renamed)


def test_a_changed_signature_is_named_in_the_error():
    def _tokenize_prompts(self, prompt_ids, images):  # a hypothetical TRL that tokenises elsewhere
        return prompt_ids

    changed = type("FutureGRPOTrainer", (), {**{n: getattr(GRPOTrainer, n) for n in TRL_CONTRACT},
                                             "_tokenize_prompts": _tokenize_prompts})
    with pytest.raises(RuntimeError, match=r"GRPOTrainer\._tokenize_prompts takes \('self', 'prompt_ids'"):
        check_trl_contract(changed)
