"""People's decisions on labels, kept with their history, and what they do to a catalogue.

    tables       the label store's tables, the kinds their rows hold (ReviewStatus, ItemKind), Item, Action
    checks       input checks at the edge: ids, heads, labels, predictions
    uploads      where uploaded photos are kept, and the names shown for them
    store        LabelStore: decisions written (and undone) in one transaction each, read as frames
    queues       the review queue's rules: order, proposals, filters, navigation, bulk acceptance
    corrections  the decisions applied to a catalogue (for training) and exported as a new one

`python -m core.labels export` writes a reviewed catalogue to a new dataset folder.
"""
