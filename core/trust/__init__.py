"""When a proposal needs no person: the taxonomy it must respect, calibrated confidence, and the
threshold per head whose accepted proposals keep their error under a target.

    taxonomy     Taxonomy (articleType -> subCategory -> masterCategory), LabelPaths: joint decoding
    calibration  temperature scaling, expected calibration error, reliability bins
    abstention   Selection: thresholds certified at a target error with a finite-sample guarantee
    layer        Trust (propose, accept), Calibration, fit_calibration, assess: the bundle a run keeps
"""
