"""How good a run is, down to the photos behind each number.

    metrics       per-head classification reports from a confusion matrix (scikit-learn's conventions)
    files         the evaluation file format: write_evaluation, load_evaluation, head_summary
    views         an evaluation reshaped for a person: class tables, the photos behind a cell, CSV
    label_issues  catalogue rows ranked by how likely their label is wrong (cleanlab)
"""
