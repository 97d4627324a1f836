"""What the stage scripts in `bioreason.recipes` train with: argument dataclasses and task loading (`common`), the
record collator, rewards, LoRA / quantisation (`adaptation`), run state for resumption, and fault-injection points
for the crash tests."""
