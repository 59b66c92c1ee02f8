"""Data health: what is wrong with a catalogue's photos and labels, found on their embeddings.

    embeddings     ModelIdentity, Embeddings and their cache file in the workspace (no torch)
    embedder       (torch) EmbeddingModel, catalogue_embeddings: the vectors computed
    similarity     nearest neighbours (faiss), near-duplicate groups, outliers
    image_quality  cleanvision's image issues and exact duplicates
    files          the data-health files: compute_health writes them, load_health reads them,
                   health_summary sums them up (torch only while computing)
"""
