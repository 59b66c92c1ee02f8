"""The tagger: what it is built from and how it trains and predicts.

    options     the model's choices by name (Pretrained, HeadType, Loss, Imbalance, Scheduler) and
                the backbones offered; no torch, so a config is checked without it
    backbones   (torch) create_backbone: timm backbones with hub or offline ImageNet weights
    losses      (torch) HeadLoss under an imbalance strategy, the seed's masked BCE
    module      (torch) the nets (MultiHeadNet, ConditionedNet, SeedNet) and TaggerModule
    datamodule  (torch) CatalogueDataModule: cached photos and encoded labels over a split
    predictor   (torch) Predictor: tags for new photos through a run's trust layer
"""
