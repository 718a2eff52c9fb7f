"""TF-LLMER's method: co-occurrence graph, Rec-PCA, item-table normalisation, the wrapper."""
