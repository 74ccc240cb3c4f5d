"""Stage 1, candidates: embeddings, ANN backends behind one interface, taste clusters, index builds, retrieval."""
