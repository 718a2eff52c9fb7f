"""TF-LLMER's room: the model (tfllmer.py, class TFLLMER), its co-occurrence graph and Rec-PCA.

Shared with the other methods: the backbone table (backbones.py), the item-table
parametrisations (item_tables.py), item text and its cache (text/), and the options (options.py).
"""
