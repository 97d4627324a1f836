"""Training recipes (CPT, SFT, GRPO, their composition) on TRL trainers. The stage scripts land with the recipes
issue; this package is shipped now so the distribution layout is stable."""
