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


def test_the_overrides_refuse_to_run_out_of_the_order_they_rely_on():
    """`_tokenize_prompts` reads the rows `_generate_and_score_completions` stored; the log-prob pass reads the rows
    `_compute_loss` stored. Called any other way (a changed TRL call order), each raises instead of pairing a prompt
    with another prompt's inputs."""
    import torch

    trainer = BioGRPOTrainer.__new__(BioGRPOTrainer)  # the methods under test read only these attributes
    trainer._rows, trainer._modality_rows = None, None
    with pytest.raises(RuntimeError, match="no dataset rows"):
        trainer._tokenize_prompts([[{"role": "user", "content": "x"}]])
    trainer._rows = [{"id": "a"}, {"id": "b"}]
    with pytest.raises(RuntimeError, match="1 prompts with 2 dataset rows"):
        trainer._tokenize_prompts([[{"role": "user", "content": "x"}]])
    trainer._modality_rows = {"protein_values": torch.zeros(3, 1, 4)}
    ids = torch.ones(2, 5, dtype=torch.long)
    with pytest.raises(RuntimeError, match="protein_values holds 3 rows for 2 sequences"):
        trainer._get_per_token_logps_and_entropies(None, ids, ids, logits_to_keep=2)
