"""The biological modalities a model can take, in one import-light module: the command line's parser needs the list
before (and often without) importing transformers, which the model's config module does."""

MODALITIES = ("dna", "rna", "protein")
