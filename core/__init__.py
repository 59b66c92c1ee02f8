"""Fashion Tagger's domain, one subpackage per concern; never imports streamlit.

From the ground up (a package imports only those above it in this list):
    choices, untrusted   a closed set of option names; untrusted text at the edges
    data/        the catalogue: styles.csv and its photos, label schema, split, demo, profiles
    workspace    where things live at run time
    images/      reading photos, the resized-photo cache, the model's transforms
    trust/       taxonomy, calibration, abstention: when a proposal needs no person
    evaluation/  metrics, the evaluation file format and its views, label issues
    model/       options, backbones, the LightningModule, losses, the DataModule, the predictor
    health/      embeddings, similar photos, image quality, the data-health files
    access/      roles, allowed folders, the workspace database
    labels/      the label store, review queues, corrections and their export

Each subpackage's `__init__` names its modules and what each holds; names are imported from the
module itself. A face that imported its modules would load torch for callers that need none: the
control path (a training config, a run folder, the registry, the Train page's first view) imports
no torch, and tests/test_train_page.py holds it to that.
"""
