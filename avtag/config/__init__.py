"""Configuration: the typed schema (:mod:`avtag.config.schema`) and the YAML loader
(:mod:`avtag.config.loader`). Import from here."""
from avtag.config.loader import (
                                 CHOICES,
                                 ConfigError,
                                 apply_overrides,
                                 build_config,
                                 config_from_dict,
                                 config_to_dict,
                                 deep_merge,
                                 load_config,
                                 parse_override,
                                 read_yaml_tree,
                                 resolve_path,
                                 upgrade_legacy,
)
from avtag.config.schema import (
                                 AblationConfig,
                                 AvtagConfig,
                                 CacheConfig,
                                 CRNNConfig,
                                 DataConfig,
                                 EfficientNetConfig,
                                 EvaluateConfig,
                                 FusionConfig,
                                 LabelMapConfig,
                                 LogMelConfig,
                                 MixConfig,
                                 ModelConfig,
                                 OptimConfig,
                                 TagConfig,
                                 TrainerConfig,
                                 TrainingConfig,
                                 VideoConfig,
)

__all__ = [
    "CHOICES", "ConfigError", "apply_overrides", "build_config", "config_from_dict", "config_to_dict", "deep_merge",
    "load_config", "parse_override", "read_yaml_tree", "resolve_path", "upgrade_legacy",
    "AblationConfig", "AvtagConfig", "CacheConfig", "CRNNConfig", "DataConfig", "EfficientNetConfig", "EvaluateConfig",
    "FusionConfig", "LabelMapConfig", "LogMelConfig", "MixConfig", "ModelConfig", "OptimConfig", "TagConfig",
    "TrainerConfig", "TrainingConfig", "VideoConfig",
]
