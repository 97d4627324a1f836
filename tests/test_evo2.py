"""Evo 2 as a real child module: its StripedHyena network is loaded once, lives in the model's state dict and
model.safetensors, and comes back from a saved folder without the loader. The `evo2` package needs CUDA, so these
tests run against a stand-in `evo2` / `vortex` package with upstream's interface (`evo2.Evo2(name).model`,
`evo2.utils.CONFIG_MAP`, the StripedHyena YAML read with pkgutil, `vortex.model.model.StripedHyena(dotdict)`, and
`Evo2.forward(ids, return_embeddings=True, layer_names=[...])` hooking a named layer)."""

from __future__ import annotations

import sys
import textwrap

import pytest
import torch
from conftest import tiny_llm, tiny_tokenizer
from safetensors.torch import load_file

from bioreason.encoders import build_featurizer, load_encoder
from bioreason.model.composition import compose

LAYER = "blocks.1.mlp.l3"
STAND_IN = {
    "vortex/__init__.py": "",
    "vortex/model/__init__.py": "",
    "vortex/model/utils.py": """
        class dotdict(dict):
            __getattr__ = dict.get
    """,
    "vortex/model/model.py": """
        import torch
        from torch import nn

        class MLP(nn.Module):
            def __init__(self, hidden):
                super().__init__()
                self.l1, self.l3 = nn.Linear(hidden, 2 * hidden), nn.Linear(2 * hidden, hidden)

            def forward(self, x):
                return self.l3(torch.relu(self.l1(x)))

        class Block(nn.Module):
            def __init__(self, hidden):
                super().__init__()
                self.mlp = MLP(hidden)

            def forward(self, x):
                return x + self.mlp(x)

        class StripedHyena(nn.Module):
            def __init__(self, config):
                super().__init__()
                self.embedding_layer = nn.Embedding(config.vocab_size, config.hidden_size)
                self.blocks = nn.ModuleList(Block(config.hidden_size) for _ in range(config.num_layers))
                self.unembed = nn.Linear(config.hidden_size, config.vocab_size)

            def forward(self, ids):
                h = self.embedding_layer(ids)
                for block in self.blocks:
                    h = block(h)
                return self.unembed(h), None
    """,
    "evo2/__init__.py": "from evo2.models import Evo2\n",
    "evo2/utils.py": 'CONFIG_MAP = {"evo2_1b_base": "configs/evo2-tiny.yml"}\n',
    "evo2/configs/evo2-tiny.yml": "vocab_size: 512\nhidden_size: 16\nnum_layers: 3\n",
    "evo2/models.py": """
        import pkgutil

        import torch
        import yaml
        from vortex.model.model import StripedHyena
        from vortex.model.utils import dotdict

        from evo2.utils import CONFIG_MAP

        class Evo2:  # upstream's loader: not an nn.Module; the network is `.model`
            loads = 0

            def __init__(self, model_name="evo2_7b", local_path=None):
                type(self).loads += 1
                torch.manual_seed(1234)  # stands for the downloaded weights: the same every time
                self.model = StripedHyena(dotdict(yaml.safe_load(pkgutil.get_data(__name__, CONFIG_MAP[model_name]))))

            def forward(self, input_ids, return_embeddings=False, layer_names=None):
                embeddings, handles = {}, []
                for name in layer_names or []:
                    hook = lambda _m, _i, out, name=name: embeddings.__setitem__(name, out.detach())
                    handles.append(self.model.get_submodule(name).register_forward_hook(hook))
                with torch.no_grad():
                    logits = self.model.forward(input_ids)
                for handle in handles:
                    handle.remove()
                return logits, embeddings if return_embeddings else None

            __call__ = forward
    """,
}


@pytest.fixture
def evo2_package(tmp_path, monkeypatch):
    for name, text in STAND_IN.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    for module in [m for m in sys.modules if m.split(".")[0] in ("evo2", "vortex")]:
        del sys.modules[module]


def dna_values(seqs=("ACGTACGTTT", "GGCA")):
    spec = load_encoder("evo2", "evo2_1b_base", layer=LAYER).featurizer_spec()
    return build_featurizer(spec)(list(seqs))


def test_evo2_network_is_a_child_module_with_upstream_embeddings(evo2_package):
    import evo2

    encoder = load_encoder("evo2", "evo2_1b_base", layer=LAYER)
    assert evo2.Evo2.loads == 1 and encoder.hidden_size == 16
    assert isinstance(encoder.network, torch.nn.Module) and f"network.{LAYER}.weight" in encoder.state_dict()
    batch = dna_values()
    emb, mask = encoder(batch["values"], batch["mask"])
    _, upstream = evo2.Evo2("evo2_1b_base")(batch["values"], return_embeddings=True, layer_names=[LAYER])
    assert emb.shape == (2, 10, 16) and torch.equal(mask, batch["mask"])
    assert torch.allclose(emb, upstream[LAYER])


def test_compose_builds_evo2_once_and_saves_its_weights(evo2_package, tmp_path):
    import evo2
    from transformers import AutoModelForCausalLM

    tok = tiny_tokenizer()
    model, processor = compose(tiny_llm(vocab_size=len(tok)), {"dna": ("evo2", "evo2_1b_base", {"layer": LAYER})},
                               projector="mean", tokenizer=tok)
    assert evo2.Evo2.loads == 1  # loaded once; the model holds that network, not a rebuilt copy
    pretrained = evo2.Evo2("evo2_1b_base").model.state_dict()
    held = model.model.encoders["dna"].network.state_dict()
    assert held.keys() == pretrained.keys() and all(torch.equal(held[k], pretrained[k]) for k in held)
    model.save_pretrained(tmp_path / "m")
    saved = load_file(str(tmp_path / "m" / "model.safetensors"))
    assert torch.equal(saved[f"model.encoders.dna.network.{LAYER}.weight"], pretrained[f"{LAYER}.weight"])
    loads = evo2.Evo2.loads
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    assert evo2.Evo2.loads == loads  # the architecture comes from the saved config, the weights from safetensors
    batch = dna_values()
    with torch.no_grad():
        before = model.model.encoders["dna"](batch["values"], batch["mask"])[0]
        after = reloaded.model.encoders["dna"](batch["values"], batch["mask"])[0]
    assert torch.equal(before, after)


def test_evo2_refuses_an_unknown_model_or_layer(evo2_package):
    with pytest.raises(ValueError, match=r"Unknown Evo 2 model 'evo2_3b'; available: \['evo2_1b_base'\]"):
        load_encoder("evo2", "evo2_3b")
    with pytest.raises(ValueError, match=r"layer 'blocks.20.mlp.l3' is not in the evo2_1b_base network"):
        load_encoder("evo2", "evo2_1b_base")  # the default layer, blocks.20, is past this network's 3 blocks
