"""Performance benchmarks (`make bench`): each one measures a ratio against its baseline in the same run, on the same
machine, and `bench.run` writes bench/results.json and BENCHMARKS.md."""
