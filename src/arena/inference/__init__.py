"""Inference, by concern: batching (sorted dynamic batches and the forward), passes (the plain and swapped
passes of each process within the deadline), tta (probabilities, fill-ins, ties), submission (the validated file,
kept logits, shards), blend (runs blended on OOF log loss). `arena predict` (arena.predict) runs them in order."""
