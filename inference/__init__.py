"""Inference over archives of climate-model output with a trained climseg checkpoint.

`climseg-predict` (`inference.predict.main`) writes one mask file per input.
"""
