"""What the diagnostics read from a TFLLMER model: the item vectors it scores with and the
sequence vectors h that meet them (the Hessian of the softmax CE loss is built from both).

They live with the diagnostics, not in the model: training never needs them.
"""

import torch


def scoring_item_vectors(model):
    """(n_items, d) item vectors as the backbone scores with them (normalised if enabled)."""
    return model.item_table.weight[: model.n_items]


@torch.no_grad()
def sequence_representation(model, interaction):
    """The sequence vectors h that full_sort_predict multiplies with the item table.

    Backbones call `self.forward(...)` directly (no module hooks fire), so the
    backbone's bound forward is shadowed for one call to record its output; a
    (B, L, d) output (BERT4Rec) is gathered at the last position, as its
    full_sort_predict does.
    """
    captured = []
    original_forward = model.backbone.forward

    def recording_forward(*args, **kwargs):
        output = original_forward(*args, **kwargs)
        captured.append(output)
        return output

    model.backbone.forward = recording_forward
    try:
        model.backbone.full_sort_predict(interaction)
    finally:
        del model.backbone.forward
    output = captured[-1][0] if isinstance(captured[-1], tuple) else captured[-1]
    if output.dim() == 3:
        output = model.gather_indexes(output, interaction[model.ITEM_SEQ_LEN] - 1)
    return output
