"""Stage scripts, one per training stage, each a thin `main()` over a TRL trainer from `bioreason.training`:
`cpt` (projector alignment / continued pre-training), `sft`, `grpo`, and `pipeline` (the stages chained under one
budget, with baselines and a report). Run as `bioreason run STAGE --config FILE` or `python -m bioreason.recipes.STAGE`;
the YAML configs live in `recipes/configs/` at the repository root."""
