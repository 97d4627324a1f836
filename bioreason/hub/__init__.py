"""Publishing: model cards rendered from `model_cards/` (`cards`) and the export / push of a model folder with
remote code, evaluation results and the base model taken from the model itself (`publish`)."""
