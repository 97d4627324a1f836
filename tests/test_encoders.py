"""Encoders: featurize -> forward contract, spec round trips, real loading code on local folders, input errors."""

from __future__ import annotations

import itertools
import json
import os

import numpy as np
import pytest
import torch
from conftest import ENCODER_TYPES, ESM_VOCAB, GENES, no_unpickling, sample_items, tiny_encoder
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file
from transformers import BertConfig, BertModel, EsmConfig, EsmModel

from bioreason.encoders import ENCODERS, build_encoder, build_featurizer, load_encoder
from bioreason.encoders.dna import EnformerEncoder, nucleotide_transformer_vocab


def run(encoder, items):
    featurizer = build_featurizer(encoder.featurizer_spec())
    batch = featurizer(items)
    encoder.eval()
    with torch.no_grad():
        emb, mask = encoder(batch["values"], batch["mask"])
    return featurizer, batch, emb, mask


@pytest.mark.parametrize("kind", ENCODER_TYPES)
def test_forward_matches_featurizer_lengths(kind):
    encoder = tiny_encoder(kind)
    featurizer, batch, emb, mask = run(encoder, sample_items(kind, 2))
    assert emb.shape[0] == 2 and emb.shape[-1] == encoder.hidden_size
    assert mask.shape == emb.shape[:2]
    # the processor sizes placeholder runs from the featurizer alone: it must agree with what the encoder emits
    assert mask.sum(-1).tolist() == featurizer.output_lengths(batch["mask"])


@pytest.mark.parametrize("kind", ENCODER_TYPES)
def test_spec_rebuild_gives_identical_embeddings(kind):
    encoder = tiny_encoder(kind)
    json.dumps(encoder.spec)  # the spec lives in config.json
    rebuilt = build_encoder(json.loads(json.dumps(encoder.spec)))
    rebuilt.load_state_dict(encoder.state_dict())
    items = sample_items(kind, 2)
    assert torch.equal(run(encoder, items)[2], run(rebuilt, items)[2])


@pytest.mark.parametrize("kind", ["esm2", "antiberty", "nucleotide_transformer", "geneformer"])
def test_padding_does_not_change_an_items_embedding(kind):
    encoder = tiny_encoder(kind)
    items = sample_items(kind, 2)
    _, _, alone, mask_alone = run(encoder, items[1:])
    _, _, batched, mask_b = run(encoder, items)
    n = int(mask_alone[0].sum())
    assert torch.allclose(alone[0, :n], batched[1, :n], atol=1e-5)


def test_unknown_encoder_names_the_available_ones():
    with pytest.raises(ValueError, match=r"Unknown encoder 'esm3'; available: \['antiberty'"):
        build_encoder({"type": "esm3"})


def test_esm2_ids_match_fair_esm_alphabet():
    import esm

    alphabet = esm.data.Alphabet.from_architecture("ESM-1b")
    assert alphabet.all_toks == ESM_VOCAB
    seqs = ["MKTAYIAKQR", "GGSW"]
    _, _, tokens = alphabet.get_batch_converter()([("a", seqs[0]), ("b", seqs[1])])
    ours = build_featurizer(tiny_encoder("esm2").featurizer_spec())(seqs)
    assert torch.equal(ours["values"], tokens)


def nt_reference_tokens(seq: str, k: int = 6) -> list[str]:
    """Nucleotide Transformer's rule, written from its tokenizer's description: split at N, cut each part into k-mers
    from its start, a remainder shorter than k into single nucleotides, one N token between parts."""
    out: list[str] = []
    for n, part in enumerate(seq.split("N")):
        if n:
            out.append("N")
        full = len(part) // k * k
        out += [part[i : i + k] for i in range(0, full, k)] + list(part[full:])
    return out


@pytest.mark.parametrize(("seq", "expected"), [
    ("ACGTACGGNCAT", ["ACGTAC", "G", "G", "N", "C", "A", "T"]),
    ("ACGTNACGTACGTA", ["A", "C", "G", "T", "N", "ACGTAC", "G", "T", "A"]),  # the frame restarts after N
    ("NNACGTACGTAC", ["N", "N", "ACGTAC", "G", "T", "A", "C"]),
])
def test_nucleotide_transformer_kmer_tokenization_restarts_the_frame_after_n(seq, expected):
    featurizer = build_featurizer(tiny_encoder("nucleotide_transformer").featurizer_spec())
    vocab = nucleotide_transformer_vocab()
    ids = featurizer([seq])["values"][0].tolist()
    assert [vocab[i] for i in ids] == ["<cls>", *expected] == ["<cls>", *nt_reference_tokens(seq)]


@settings(max_examples=200, deadline=None)
@given(seq=st.text(alphabet="ACGTN", min_size=1, max_size=40))
def test_nucleotide_transformer_tokenization_follows_nt_rule(seq):
    featurizer = build_featurizer(tiny_encoder("nucleotide_transformer").featurizer_spec())
    vocab = nucleotide_transformer_vocab()
    ids = featurizer([seq])["values"][0].tolist()
    assert [vocab[i] for i in ids] == ["<cls>", *nt_reference_tokens(seq)]


@pytest.mark.parametrize(
    ("kind", "items", "error", "match"),
    [
        ("esm2", ["MKT1"], ValueError, r"protein input 0: character '1' at position 3"),
        ("esm2", [42], TypeError, "protein input 0 must be a sequence string"),
        ("esm2", ["MKT", ""], ValueError, "protein input 1 is an empty sequence"),
        ("esm2", ["A" * 300], ValueError, "protein input 0 is 302 tokens long; the encoder accepts at most 254"),
        ("enformer", ["ACGTRY"], ValueError, r"dna input 0: characters \['R', 'Y'\] are not A, C, G, T or N"),
        ("geneformer", [{"TP53": 3.0, "CD3E": 1.0}], ValueError, "none of its 2 genes .* symbols vs Ensembl ids"),
        ("geneformer", [{GENES[0]: -1.0}], ValueError, "negative expression values"),
        ("geneformer", [{GENES[0]: float("nan")}], ValueError, "NaN or inf"),
        ("expression", [{"TP53": 1.0}], ValueError, "none of its 1 genes are in the 30-gene panel"),
        ("expression", ["not a cell"], TypeError, "rna input 0 must be a"),
        ("precomputed", [np.zeros(5)], ValueError, "expected an embedding of 1 x 12 values"),
        ("precomputed", ["cell_1"], ValueError, "is an id .* but the precomputed encoder has no store"),
        ("kmer", ["ACGT", "ACXT"], ValueError, r"dna input 1: characters \['X'\] are not A, C, G, T or N"),
        ("kmer", ["ANA"], ValueError, "dna input 0: no 2-mer without N in its 3 bases"),
        ("kmer", [b"ACGT"], TypeError, "dna input 0 must be a sequence string"),
    ],
)
def test_bad_inputs_raise_precise_errors(kind, items, error, match):
    featurizer = build_featurizer(tiny_encoder(kind).featurizer_spec())
    with pytest.raises(error, match=match):
        featurizer(items)


def test_lowercase_sequences_are_uppercased():
    featurizer = build_featurizer(tiny_encoder("esm2").featurizer_spec())
    assert torch.equal(featurizer(["mktay"])["values"], featurizer(["MKTAY"])["values"])


def test_geneformer_rank_value_encoding_by_hand():
    spec = tiny_encoder("geneformer").featurizer_spec()
    spec["medians"] = {GENES[0]: 10.0, GENES[1]: 1.0, GENES[2]: 1.0}
    featurizer = build_featurizer(spec)
    # totals cancel out; normalised: g0 = 8/10 = 0.8, g1 = 1, g2 = 0 (not expressed), g3 = 1 (tie with g1: by id)
    ids = featurizer([{GENES[0]: 8.0, GENES[1]: 1.0, GENES[2]: 0.0, GENES[3]: 1.0}])["values"][0].tolist()
    vocab = spec["vocab"]
    assert [vocab[i] for i in ids] == ["<cls>", GENES[1], GENES[3], GENES[0]]


def test_rna_items_accept_dict_series_anndata_and_pairs():
    import anndata
    import pandas as pd

    featurizer = build_featurizer(tiny_encoder("expression").featurizer_spec())
    values = np.arange(30, dtype=np.float32)
    as_dict = featurizer([dict(zip(GENES[:30], values, strict=True))])
    series = featurizer([pd.Series(values, index=GENES[:30])])
    adata = anndata.AnnData(values[None, :], var=pd.DataFrame(index=GENES[:30]))
    row = featurizer([adata[0]])
    pair = featurizer([(GENES[:30], values)])
    for other in (series, row, pair):
        assert torch.equal(as_dict["values"], other["values"])


@pytest.mark.parametrize("fmt", ["npz", "safetensors", "h5ad"])
def test_precomputed_store_lookup(tmp_path, fmt):
    import anndata

    emb = np.random.default_rng(0).normal(size=(3, 12)).astype(np.float32)
    ids = ["c0", "c1", "c2"]
    path = str(tmp_path / f"store.{fmt}")
    if fmt == "npz":
        np.savez(path, ids=np.array(ids), embeddings=emb)
    elif fmt == "safetensors":
        save_file({i: torch.from_numpy(e) for i, e in zip(ids, emb, strict=True)}, path)
    else:
        adata = anndata.AnnData(np.zeros((3, 2), dtype=np.float32), obsm={"X_tf": emb})
        adata.obs_names = ids
        adata.write_h5ad(path)
    encoder = load_encoder("precomputed", path, obsm_key="X_tf")
    assert encoder.hidden_size == 12
    featurizer = build_featurizer(encoder.featurizer_spec())
    out = featurizer(["c2", emb[0]])
    assert torch.allclose(out["values"][:, 0], torch.from_numpy(emb[[2, 0]]))
    with pytest.raises(KeyError, match="id 'c9' not found"):
        featurizer(["c9"])


def _save_vocab(folder, vocab):
    with open(os.path.join(folder, "vocab.txt"), "w") as fh:
        fh.write("\n".join(vocab) + "\n")


@pytest.mark.parametrize("kind", ["esm2", "nucleotide_transformer"])
def test_esm_family_loads_from_local_folder(tmp_path, kind):
    vocab = ESM_VOCAB if kind == "esm2" else nucleotide_transformer_vocab()
    model = EsmModel(EsmConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                               intermediate_size=64, max_position_embeddings=128, position_embedding_type="rotary",
                               pad_token_id=1, mask_token_id=2), add_pooling_layer=False)
    model.save_pretrained(tmp_path)
    _save_vocab(tmp_path, vocab)
    encoder = load_encoder(kind, str(tmp_path))
    assert encoder.spec["source"] == str(tmp_path) and encoder.featurizer_spec()["vocab"] == vocab
    item = "MKTAYIAK" if kind == "esm2" else "ACGTACGTACGTAA"
    batch = build_featurizer(encoder.featurizer_spec())([item])
    model.eval()
    with torch.no_grad():
        expected = model(input_ids=batch["values"], attention_mask=batch["mask"].long()).last_hidden_state
        got, _ = encoder.eval()(batch["values"], batch["mask"])
    assert torch.equal(expected, got)


def test_encoder_init_writes_a_loadable_random_nucleotide_transformer(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "nt"
    proc = subprocess.run([sys.executable, "-m", "bioreason.cli", "encoder", "init", "nucleotide_transformer", str(out),
                           "--hidden-size", "32", "--layers", "1", "--max-length", "1000"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "not pretrained" in (out / "README.md").read_text() and (out / "model.safetensors").exists()
    encoder = load_encoder("nucleotide_transformer", str(out))
    assert encoder.hidden_size == 32 and encoder.featurizer_spec()["vocab"] == nucleotide_transformer_vocab()
    _, batch, emb, mask = run(encoder, ["ACGT" * 250, "ACGTAC" * 8])  # 1000 bp fits, 48 bp is 8 tokens + <cls>
    assert emb.shape[:2] == mask.shape and mask.sum(-1).tolist() == [1 + 1000 // 6 + 1000 % 6, 9]
    # the same seed writes the same weights without touching the caller's RNG; another seed writes others
    from bioreason.encoders.dna import init_nucleotide_transformer

    state = torch.random.get_rng_state()
    folders = [init_nucleotide_transformer(str(tmp_path / name), 32, 1, seed=seed) for name, seed in (("a", 0),
                                                                                                     ("b", 1))]
    assert torch.equal(torch.random.get_rng_state(), state)
    again, other = (load_encoder("nucleotide_transformer", folder) for folder in folders)
    weights = [e.model.embeddings.word_embeddings.weight for e in (encoder, again, other)]
    assert torch.equal(weights[0], weights[1]) and not torch.equal(weights[0], weights[2])


def test_geneformer_loads_from_local_folder_with_json_dictionary(tmp_path):
    vocab = ["<pad>", "<mask>", *GENES]
    model = BertModel(BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                 intermediate_size=64, max_position_embeddings=64), add_pooling_layer=False)
    model.save_pretrained(tmp_path)
    with open(tmp_path / "token_dictionary.json", "w") as fh:
        json.dump({g: i for i, g in enumerate(vocab)}, fh)
    with open(tmp_path / "gene_median_dictionary.json", "w") as fh:
        json.dump({g: 2.0 for g in GENES}, fh)
    encoder = load_encoder("geneformer", str(tmp_path), medians_file="gene_median_dictionary.json")
    assert encoder.featurizer_spec()["vocab"] == vocab
    assert encoder.featurizer_spec()["medians"] == {g: 2.0 for g in GENES}
    assert torch.equal(encoder.model.embeddings.word_embeddings.weight, model.embeddings.word_embeddings.weight)
    # without medians: an error, unless skipping them is said (and recorded)
    with pytest.raises(ValueError, match="needs Geneformer's gene median dictionary"):
        load_encoder("geneformer", str(tmp_path))
    skipped = load_encoder("geneformer", str(tmp_path), skip_medians=True)
    assert skipped.featurizer_spec()["skip_medians"] is True and skipped.spec["options"]["skip_medians"] is True
    spec = skipped.featurizer_spec()
    with pytest.raises(ValueError, match="no gene medians"):
        build_featurizer({**spec, "skip_medians": False})


def test_geneformer_reads_a_hub_sources_files_from_the_hub_not_as_a_local_path(tmp_path, monkeypatch):
    """A hub id was joined to the file name as a local path ("ctheodoris/Geneformer/token_dictionary.json")."""
    import transformers.utils

    vocab = ["<pad>", "<mask>", *GENES]
    model = BertModel(BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                 intermediate_size=64, max_position_embeddings=64), add_pooling_layer=False)
    files = {"token_dictionary.json": {g: i for i, g in enumerate(vocab)}, "medians.json": {g: 1.5 for g in GENES}}
    for name, content in files.items():
        (tmp_path / name).write_text(json.dumps(content))
    asked = []

    def cached_file(source, name, **kwargs):
        asked.append((source, name))
        return str(tmp_path / name)

    monkeypatch.setattr(transformers.utils, "cached_file", cached_file)
    monkeypatch.setattr(BertModel, "from_pretrained", classmethod(lambda cls, *a, **k: model))
    encoder = load_encoder("geneformer", "ctheodoris/Geneformer", medians_file="medians.json")
    assert asked == [("ctheodoris/Geneformer", "token_dictionary.json"), ("ctheodoris/Geneformer", "medians.json")]
    assert encoder.featurizer_spec()["medians"] == files["medians.json"]


def test_geneformer_pickle_dictionary_is_read_without_unpickling(tmp_path, monkeypatch):
    import pickle

    from bioreason.encoders.plain_pickle import PlainPickleError
    from bioreason.encoders.rna import load_gene_dict

    def no_unpickling(*args, **kwargs):
        raise AssertionError("the gene dictionary was unpickled")

    monkeypatch.setattr(pickle, "load", no_unpickling)
    monkeypatch.setattr(pickle, "loads", no_unpickling)
    monkeypatch.setattr(pickle, "Unpickler", no_unpickling)
    tokens = {"<pad>": 0, "<mask>": 1, **{f"ENSG{i:011d}": i + 2 for i in range(300)}}  # memo past 256: LONG_BINPUT
    medians = {"ENSG1": 1.5, "ENSG2": 2, "ENSG3": 2**40}
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):  # protocol 0 writes text opcodes (UNICODE, INT, FLOAT, DICT)
        for table in (tokens, medians):
            path = tmp_path / f"p{protocol}.pkl"
            path.write_bytes(pickle.dumps(table, protocol=protocol))
            assert load_gene_dict(str(path)) == table
    bad = {"callable": {"ENSG1": os.getcwd}, "list": {"ENSG1": [1, 2]}, "text": {"ENSG1": "x"},
           "int keys": {1: 2}, "nested": {"a": {"b": 1}}}
    errors = {"callable": "opcode .*GLOBAL", "list": "opcode .*LIST", "text": "is a str, not a number",
              "int keys": "key 1 is not a string", "nested": "is a dict, not a number"}
    for label, table in bad.items():
        path = tmp_path / f"{label.replace(' ', '_')}.pkl"
        path.write_bytes(pickle.dumps(table))
        with pytest.raises(PlainPickleError, match=f"{path.name}.*{errors[label]}"):
            load_gene_dict(str(path))
    truncated = tmp_path / "truncated.pkl"
    truncated.write_bytes(pickle.dumps(tokens)[:-40])
    with pytest.raises(PlainPickleError, match="truncated.pkl: not a well-formed pickle"):
        load_gene_dict(str(truncated))


def test_enformer_loads_from_local_folder_and_saves_no_shared_tensors(tmp_path):
    from enformer_pytorch import Enformer

    reference = Enformer.from_hparams(dim=48, depth=1, heads=2, output_heads=dict(human=4), target_length=-1,
                                      dim_divisible_by=16, attn_dim_key=8)
    reference.config.save_pretrained(tmp_path)
    save_file({k: v.contiguous() for k, v in reference.state_dict().items() if not k.startswith("_trunk.")},
              str(tmp_path / "model.safetensors"))
    encoder = load_encoder("enformer", str(tmp_path))
    assert isinstance(encoder, EnformerEncoder)
    assert not any(k.startswith(("enformer._trunk", "enformer._heads")) for k in encoder.state_dict())
    x = torch.randint(0, 4, (1, 256))
    reference.eval()
    with torch.no_grad():
        got, mask = encoder.eval()(x, torch.ones(1, 256, dtype=torch.bool))
        assert torch.equal(reference(x, return_only_embeddings=True), got)
    assert mask.sum().item() == 2


@pytest.mark.parametrize("damage", ["missing", "unexpected"])
def test_enformer_refuses_a_checkpoint_that_does_not_cover_the_model(tmp_path, damage):
    """Before, `strict=False` loaded such a checkpoint and left the missing tensors at their random init."""
    from enformer_pytorch import Enformer

    reference = Enformer.from_hparams(dim=48, depth=1, heads=2, output_heads=dict(human=4), target_length=-1,
                                      dim_divisible_by=16, attn_dim_key=8)
    reference.config.save_pretrained(tmp_path)
    state = {k: v.contiguous() for k, v in reference.state_dict().items() if not k.startswith("_trunk.")}
    if damage == "missing":
        state.pop("transformer.0.0.fn.1.to_q.weight")
        match = r"1 tensors missing \(transformer\.0\.0\.fn\.1\.to_q\.weight\)"
    else:
        state["transformer.9.extra"] = torch.zeros(2)
        match = r"1 unexpected \(transformer\.9\.extra\)"
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match=match):
        load_encoder("enformer", str(tmp_path))


@pytest.mark.parametrize(
    ("kind", "hint"), [("evo2", "pip install flash-attn evo2"), ("esmc", "conflicts with fair-esm")]
)
def test_optional_encoders_say_how_to_install(kind, hint):
    with pytest.raises(ImportError, match=hint):
        load_encoder(kind)


def test_registry_lists_every_encoder_the_design_names():
    assert set(ENCODERS) == {"nucleotide_transformer", "enformer", "evo2", "esm2", "esmc", "antiberty", "geneformer",
                             "expression", "precomputed", "kmer", "scanpy_pca"}


def test_kmer_spectrum_by_hand():
    """ACGTAC has the 2-mers AC, CG, GT, TA, AC: AC at 2/5 of the windows against 1/16 expected -> 5.4; a skipped
    N window counts nowhere; with `canonical`, AC and its reverse complement GT share one column."""
    encoder = load_encoder("kmer", "2")
    assert encoder.hidden_size == 16
    values = build_featurizer(encoder.featurizer_spec())(["ACGTAC", "AANAA"])["values"]
    column = {"".join(p): i for i, p in enumerate(itertools.product("ACGT", repeat=2))}
    assert values[0, column["AC"]].item() == pytest.approx(2 / 5 * 16 - 1)
    assert values[0, column["CG"]].item() == pytest.approx(1 / 5 * 16 - 1)
    assert values[0, column["AA"]].item() == pytest.approx(-1)
    assert values[1, column["AA"]].item() == pytest.approx(2 / 2 * 16 - 1)  # AN and NA skipped
    canonical = load_encoder("kmer", "2", canonical=True)
    assert canonical.hidden_size == 10  # 16 2-mers: 4 palindromes + 6 pairs
    featurizer = build_featurizer(canonical.featurizer_spec())
    forward, reverse = featurizer(["AACGTT", "AACGTT"[::-1].translate(str.maketrans("ACGT", "TGCA"))])["values"]
    assert torch.equal(forward, reverse)
    # the AC / GT column: 3 of the 5 windows (AC twice, GT once), against 2 of 16 expected
    assert featurizer(["ACGTAC"])["values"][0].max().item() == pytest.approx(3 / 5 * 8 - 1)


@pytest.mark.parametrize(("source", "match"), [("x", "source is its k"), ("9", "integer from 1 to 8")])
def test_kmer_refuses_a_bad_k(source, match):
    with pytest.raises(ValueError, match=match):
        load_encoder("kmer", source)


def test_antiberty_real_weights_load_without_pickle_code():
    encoder = load_encoder("antiberty")
    assert encoder.hidden_size == 512
    path = os.path.join(encoder_path(), "pytorch_model.bin")
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert torch.equal(encoder.model.embeddings.word_embeddings.weight, state["bert.embeddings.word_embeddings.weight"])
    featurizer, batch, emb, mask = run(encoder, ["EVQLVESGGGLVQPGGSLRLSCAAS"])
    assert batch["values"][0, 0].item() == 2 and batch["values"][0, -1].item() == 3  # [CLS] ... [SEP]
    assert 1 not in batch["values"][0].tolist()  # no [UNK]: the transformers-5 tokenizer bug does not apply
    assert emb.shape == (1, 27, 512) and torch.isfinite(emb).all()


def encoder_path():
    from bioreason.encoders.protein import antiberty_default_dir

    return antiberty_default_dir()


def test_an_encoder_the_hub_cannot_serve_offline_names_the_model_and_the_way_out(monkeypatch, tmp_path):
    """Offline, transformers' connection error names neither the encoder nor the model id; ours names both and the
    offline alternatives."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty hub cache: nothing to fall back on
    from bioreason.encoders import load_encoder

    with pytest.raises(OSError) as caught:
        load_encoder("nucleotide_transformer")
    message = str(caught.value)
    assert message.startswith("encoder nucleotide_transformer: could not load "
                              "'InstaDeepAI/nucleotide-transformer-500m-human-ref'")
    assert "hf download InstaDeepAI/nucleotide-transformer-500m-human-ref" in message
    assert "bioreason encoder init nucleotide_transformer DIR" in message and "\n" not in message
    with pytest.raises(OSError, match="encoder esm2: could not load 'facebook/esm2_t6_8M_UR50D'") as caught:
        load_encoder("esm2")
    assert "encoder init" not in str(caught.value)  # no random-init command for this one


def test_an_enformer_folder_with_only_a_pickle_is_refused_unread(tmp_path, monkeypatch):
    """A pytorch_model.bin is a pickle: reading it runs what it names. The folder is refused with its name and the
    conversion, and the file is never handed to torch.load."""
    from enformer_pytorch import Enformer

    from bioreason.encoders.weights import SafetensorsOnlyError

    reference = Enformer.from_hparams(dim=48, depth=1, heads=2, output_heads=dict(human=4), target_length=-1,
                                      dim_divisible_by=16, attn_dim_key=8)
    reference.config.save_pretrained(tmp_path)
    torch.save(reference.state_dict(), tmp_path / "pytorch_model.bin")
    no_unpickling(monkeypatch)
    with pytest.raises(SafetensorsOnlyError, match=rf"{tmp_path}: no model.safetensors.*save_file\(torch.load"):
        load_encoder("enformer", str(tmp_path))


def test_an_antiberty_folder_is_read_from_safetensors_or_the_pinned_wheel_pickle_only(tmp_path, monkeypatch):
    """The wheel's pytorch_model.bin is read because its bytes are pinned by sha256; the same weights in a user's
    folder are read from model.safetensors, and a user's .bin (even one byte changed) is refused before unpickling."""
    import shutil

    from safetensors.torch import save_file

    from bioreason.encoders.protein import load_antiberty_state
    from bioreason.encoders.weights import SafetensorsOnlyError

    wheel = encoder_path()
    state = load_antiberty_state(wheel)  # the pinned pickle
    bert = load_encoder("antiberty").model
    user = tmp_path / "antiberty"
    user.mkdir()
    shutil.copy(os.path.join(wheel, "config.json"), user / "config.json")
    shutil.copy(os.path.join(os.path.dirname(wheel), "vocab.txt"), user / "vocab.txt")
    data = bytearray(open(os.path.join(wheel, "pytorch_model.bin"), "rb").read())
    data[-100] ^= 1
    (user / "pytorch_model.bin").write_bytes(bytes(data))
    no_unpickling(monkeypatch)
    with pytest.raises(SafetensorsOnlyError, match=r"pytorch_model.bin: sha256 [0-9a-f]{64} is not the pinned"):
        load_encoder("antiberty", str(user))
    (user / "pytorch_model.bin").unlink()
    with pytest.raises(SafetensorsOnlyError, match=rf"{user}: no model.safetensors"):
        load_encoder("antiberty", str(user))
    save_file({f"bert.{k}": v.contiguous() for k, v in bert.state_dict().items()}, str(user / "model.safetensors"))
    loaded = load_encoder("antiberty", str(user)).model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in bert.state_dict().items())
    assert torch.equal(state["embeddings.word_embeddings.weight"], loaded["embeddings.word_embeddings.weight"])


def test_a_transformers_encoder_folder_with_only_a_pickle_is_refused_unread(tmp_path, monkeypatch):
    """ESM2 / Nucleotide Transformer / Geneformer folders load through transformers with safetensors required: the
    same weights as a pytorch_model.bin are refused, and torch.load is never reached."""
    model = EsmModel(EsmConfig(vocab_size=len(ESM_VOCAB), hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                               intermediate_size=64, max_position_embeddings=128, pad_token_id=1, mask_token_id=2),
                     add_pooling_layer=False)
    model.config.save_pretrained(tmp_path)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    _save_vocab(tmp_path, ESM_VOCAB)
    no_unpickling(monkeypatch)
    with pytest.raises(OSError, match="model.safetensors"):
        load_encoder("esm2", str(tmp_path))
